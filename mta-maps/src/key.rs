//! Key folding: how fixed-string tables compare keys.
//!
//! Postfix folds keys of fixed-string tables to lower case when it builds
//! them and when it looks them up, unless told not to (`postmap -f`).
//! Folding here is Unicode lower-casing, which is what Postfix does for
//! UTF-8 keys with `smtputf8_enable = yes`; for ASCII keys it is plain
//! ASCII lower-casing either way. (ICU full case folding, which Postfix
//! uses, differs from lower-casing for a handful of characters such as
//! `ß`; keys with those characters may not match a Postfix-built table.)

use std::borrow::Cow;

/// Whether a table folds keys to lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Folding {
    /// Keys are folded to lower case when stored and when looked up
    /// (Postfix's default).
    #[default]
    Lower,
    /// Keys are kept as they are (`postmap -f`).
    None,
}

impl Folding {
    /// Folds `key`, without allocating when it is already folded.
    ///
    /// # Example
    /// ```
    /// use mta_maps::key::Folding;
    /// assert_eq!(Folding::Lower.fold("Alice@Example.COM"), "alice@example.com");
    /// assert_eq!(Folding::Lower.fold("ÜSER@EXÄMPLE.COM"), "üser@exämple.com");
    /// assert_eq!(Folding::None.fold("Alice"), "Alice");
    /// ```
    pub fn fold<'k>(self, key: &'k str) -> Cow<'k, str> {
        match self {
            Folding::None => Cow::Borrowed(key),
            Folding::Lower => {
                let needs = if key.is_ascii() {
                    key.bytes().any(|b| b.is_ascii_uppercase())
                } else {
                    key.chars().any(|c| c.is_uppercase())
                };
                if !needs {
                    Cow::Borrowed(key)
                } else if key.is_ascii() {
                    Cow::Owned(key.to_ascii_lowercase())
                } else {
                    Cow::Owned(key.to_lowercase())
                }
            }
        }
    }
}
