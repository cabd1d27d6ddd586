//! The `$name` macros of `local(8)` (`forward_path`, `mailbox_command`,
//! `luser_relay`) and `pipe(8)` (`argv=`), expanded by `mta-core`'s
//! Postfix expansion: `$name`, `${name}`, `${name?text}`,
//! `${name:text}`, `$$`. A value is substituted as it is: a `$` in an
//! address is not expanded again.

use mta_core::config::expand::{self, ExpandWarning};

/// `template` with each macro replaced by `value(name)`; a name without
/// a value expands to nothing.
///
/// # Errors
///
/// Malformed macro syntax (`${broken`, a lone `$`), in Postfix's words.
pub(crate) fn expand(
    template: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let literal = |name: &str| value(name).map(|v| v.replace('$', "$$"));
    let mut warnings: Vec<ExpandWarning> = Vec::new();
    expand::expand(template, &literal, &mut warnings).map_err(|e| e.to_string())
}

/// The macro names `template` uses.
pub(crate) fn names(template: &str) -> Vec<String> {
    expand::referenced_names(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_literal_values() {
        let v = |n: &str| match n {
            "home" => Some("/home/joe".to_owned()),
            "extension" => Some(String::new()),
            "recipient" => Some("a$b@example.com".to_owned()),
            _ => None,
        };
        assert_eq!(expand("$home/.forward", &v).unwrap(), "/home/joe/.forward");
        assert_eq!(expand("${extension?+x}y${extension:z}", &v).unwrap(), "yz");
        assert_eq!(
            expand("<${recipient}> $$5", &v).unwrap(),
            "<a$b@example.com> $5"
        );
        assert!(expand("${broken", &v).is_err());
        assert_eq!(
            names("a${user}b$extension ${x?$y}"),
            ["user", "extension", "x", "y"]
        );
    }
}
