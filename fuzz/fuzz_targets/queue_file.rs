//! The queue-file reader on arbitrary bytes: an error (the file goes to
//! `corrupt`) or a message, never a panic; a message it accepts writes
//! back to the same bytes' meaning.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mta_queue::file::{MAGIC, QueueFile, VERSION};

fuzz_target!(|data: &[u8]| {
    // Half the inputs start like a real file so the records get explored.
    let mut framed = MAGIC.to_vec();
    framed.extend_from_slice(&VERSION.to_le_bytes());
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(q) = QueueFile::parse(bytes) {
            assert!(!q.envelope.recipients.is_empty());
            for r in &q.envelope.recipients {
                assert!((r.offset as usize) < bytes.len());
                assert!(matches!(bytes[r.offset as usize], b'R' | b'D'));
            }
        }
    }
});
