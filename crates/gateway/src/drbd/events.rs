//! Parser of one line of `drbdsetup events2` output (DRBD 9), pure and total: any byte
//! string gives an [`Event`] or a [`ParseError`], never a panic.
//!
//! The format (drbdsetup(8), "events2"): words separated by spaces. An optional leading
//! timestamp (`--timestamps`) or event number (older drbd-utils; a trailing `*` means the
//! event continues on the next line) is skipped. Then the kind of event (`exists`,
//! `create`, `change`, `destroy`, `call`, `response`), the object (`resource`, `device`,
//! `connection`, `peer-device`, `path`, `helper`, or `-` which ends the dump of the
//! current state), and `key:value` words, e.g.
//!
//! ```text
//! exists resource name:r0 role:Secondary suspended:no may_promote:yes promotion_score:10102
//! exists device name:r0 volume:0 minor:0 disk:UpToDate client:no quorum:yes
//! change resource name:r0 role:Primary
//! exists -
//! ```
//!
//! `change` lines carry only the fields that changed, so the meaning of an event is left
//! to [`super::state`], which merges it into the last known state.

/// Longest line accepted; `drbdsetup` lines are a few hundred bytes at most.
pub const MAX_LINE: usize = 16 * 1024;
/// Most `key:value` fields accepted on one line.
pub const MAX_FIELDS: usize = 128;

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Part of the dump of the current state.
    Exists,
    Create,
    Change,
    Destroy,
    /// A handler script was called / returned.
    Call,
    Response,
}

/// What the event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Resource,
    Device,
    Connection,
    PeerDevice,
    Path,
    Helper,
    /// `exists -`: the dump of the current state is complete.
    EndOfDump,
    /// An object kind this parser does not know (newer DRBD); ignored by the state.
    Other(String),
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub verb: Verb,
    pub object: Object,
    /// `key:value` words in order. A word without `:` is kept with an empty value.
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// The value of `key`, if present (the first one when repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The resource the event is about (`name:`).
    pub fn resource(&self) -> Option<&str> {
        self.get("name")
    }
}

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("line of {0} bytes is longer than {MAX_LINE}")]
    TooLong(usize),
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("unknown event kind `{0}`")]
    UnknownVerb(String),
    #[error("event `{0}` names no object")]
    MissingObject(String),
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("field `{0}` has an empty key")]
    EmptyKey(String),
}

fn verb(word: &str) -> Option<Verb> {
    Some(match word {
        "exists" => Verb::Exists,
        "create" => Verb::Create,
        "change" => Verb::Change,
        "destroy" => Verb::Destroy,
        "call" => Verb::Call,
        "response" => Verb::Response,
        _ => return None,
    })
}

/// A leading word that is not part of the event: an event number (`12`, `12*`) or a
/// `--timestamps` time stamp (`2026-11-25T09:37:02.123456+00:00`).
fn is_prefix(word: &str) -> bool {
    let digits = word.trim_end_matches('*');
    let number = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let stamp = word.len() >= 10
        && word.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && word.contains('T')
        && word.contains('-');
    number || stamp
}

/// Parses one line (without or with its trailing newline).
pub fn parse_line(line: &[u8]) -> Result<Event, ParseError> {
    if line.len() > MAX_LINE {
        return Err(ParseError::TooLong(line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let mut words = text.split_ascii_whitespace().peekable();
    if words.peek().is_some_and(|w| is_prefix(w)) {
        words.next();
    }
    let first = words.next().ok_or(ParseError::Empty)?;
    let verb = verb(first).ok_or_else(|| ParseError::UnknownVerb(first.to_string()))?;
    let object = match words.next() {
        None => return Err(ParseError::MissingObject(first.to_string())),
        Some("resource") => Object::Resource,
        Some("device") => Object::Device,
        Some("connection") => Object::Connection,
        Some("peer-device") => Object::PeerDevice,
        Some("path") => Object::Path,
        Some("helper") => Object::Helper,
        Some("-") => Object::EndOfDump,
        Some(other) => Object::Other(other.to_string()),
    };
    let mut fields = Vec::new();
    for w in words {
        if fields.len() == MAX_FIELDS {
            return Err(ParseError::TooManyFields);
        }
        let (k, v) = w.split_once(':').unwrap_or((w, ""));
        if k.is_empty() {
            return Err(ParseError::EmptyKey(w.to_string()));
        }
        fields.push((k.to_string(), v.to_string()));
    }
    Ok(Event {
        verb,
        object,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resource_line() {
        let e = parse_line(
            b"exists resource name:r0 role:Secondary suspended:no may_promote:yes promotion_score:10102\n",
        )
        .expect("parses");
        assert_eq!(e.verb, Verb::Exists);
        assert_eq!(e.object, Object::Resource);
        assert_eq!(e.resource(), Some("r0"));
        assert_eq!(e.get("role"), Some("Secondary"));
        assert_eq!(e.get("may_promote"), Some("yes"));
        assert_eq!(e.get("promotion_score"), Some("10102"));
        assert_eq!(e.get("absent"), None);
    }

    #[test]
    fn other_objects_and_end_of_dump() {
        let d = parse_line(b"change device name:r0 volume:0 minor:0 disk:Failed quorum:no")
            .expect("parses");
        assert_eq!((d.verb, d.object.clone()), (Verb::Change, Object::Device));
        assert_eq!(d.get("disk"), Some("Failed"));
        let p = parse_line(
            b"exists peer-device name:r0 peer-node-id:1 conn-name:b volume:0 replication:Established peer-disk:UpToDate",
        )
        .expect("parses");
        assert_eq!(p.object, Object::PeerDevice);
        assert_eq!(p.get("peer-disk"), Some("UpToDate"));
        assert_eq!(
            parse_line(b"exists -").map(|e| e.object),
            Ok(Object::EndOfDump)
        );
        assert_eq!(
            parse_line(b"create frobnicator name:r0").map(|e| e.object),
            Ok(Object::Other("frobnicator".into()))
        );
    }

    #[test]
    fn prefixes_are_skipped() {
        let t =
            parse_line(b"2026-11-25T09:37:02.123456+00:00 change resource name:r0 role:Primary")
                .expect("parses");
        assert_eq!(t.get("role"), Some("Primary"));
        let n = parse_line(b"17* change resource name:r0 role:Primary").expect("parses");
        assert_eq!(n.verb, Verb::Change);
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse_line(b""), Err(ParseError::Empty));
        assert_eq!(parse_line(b"   \n"), Err(ParseError::Empty));
        assert_eq!(parse_line(b"12"), Err(ParseError::Empty));
        assert_eq!(
            parse_line(b"hello resource"),
            Err(ParseError::UnknownVerb("hello".into()))
        );
        assert_eq!(
            parse_line(b"exists"),
            Err(ParseError::MissingObject("exists".into()))
        );
        assert_eq!(
            parse_line(b"exists resource \xff"),
            Err(ParseError::NotUtf8)
        );
        assert_eq!(
            parse_line(b"exists resource :x"),
            Err(ParseError::EmptyKey(":x".into()))
        );
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parse_line(&long), Err(ParseError::TooLong(MAX_LINE + 1)));
        let many = format!("exists resource {}", "k:v ".repeat(MAX_FIELDS + 1));
        assert_eq!(parse_line(many.as_bytes()), Err(ParseError::TooManyFields));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_line(&bytes);
        }

        #[test]
        fn fields_roundtrip(
            fields in proptest::collection::vec(("[a-z_-]{1,12}", "[A-Za-z0-9]{0,12}"), 0..20)
        ) {
            let mut line = String::from("change resource");
            for (k, v) in &fields {
                line.push(' ');
                line.push_str(k);
                line.push(':');
                line.push_str(v);
            }
            let e = parse_line(line.as_bytes()).expect("well-formed line");
            prop_assert_eq!(e.fields, fields);
        }
    }
}
