//! The console's query strings and path parts, checked before anything is
//! asked of the broker: a malformed value is the user's mistake and gets a
//! 400 page that says which parameter and why, never a broker error.
//!
//! Owns: decoding (`application/x-www-form-urlencoded`, as browsers send
//! forms) and the bounds on every number a URL can carry.

/// Query parameters accepted at most, and bytes of query string: a URL can't
/// make the console allocate much.
const PARAMS_MAX: usize = 32;
const QUERY_BYTES_MAX: usize = 4096;

/// A bad parameter: the message names it and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

/// Decoded `name=value` pairs, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

/// `%XX` and `+` decoded; `None` if an escape is malformed or the bytes are not UTF-8.
fn decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, BadParam> {
        let raw = raw.unwrap_or("");
        if raw.len() > QUERY_BYTES_MAX {
            return Err(BadParam(format!(
                "the query string is longer than {QUERY_BYTES_MAX} bytes"
            )));
        }
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            if pairs.len() == PARAMS_MAX {
                return Err(BadParam(format!("more than {PARAMS_MAX} query parameters")));
            }
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let (Some(name), Some(value)) = (decode(name), decode(value)) else {
                return Err(BadParam(
                    "the query string has a malformed percent-escape or is not UTF-8".into(),
                ));
            };
            pairs.push((name, value));
        }
        Ok(Query(pairs))
    }

    /// The first value of `name`, with an empty value taken as absent (an
    /// empty form field).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// An integer in `min..=max`, or `None` when absent.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, BadParam> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value: i64 = text.parse().map_err(|_| {
            BadParam(format!(
                "parameter {name:?} must be a whole number, not {:?}",
                truncate(text)
            ))
        })?;
        if value < min || value > max {
            return Err(BadParam(format!(
                "parameter {name:?} must be between {min} and {max}, not {value}"
            )));
        }
        Ok(Some(value))
    }

    /// A 1-based page number (default 1).
    pub fn page(&self) -> Result<usize, BadParam> {
        Ok(self.int("page", 1, 1_000_000)?.unwrap_or(1) as usize)
    }

    /// One of `allowed` (default the first).
    pub fn choice(&self, name: &str, allowed: &[&'static str]) -> Result<&'static str, BadParam> {
        match self.get(name) {
            None => Ok(allowed.first().copied().unwrap_or("")),
            Some(v) => allowed.iter().copied().find(|a| *a == v).ok_or_else(|| {
                BadParam(format!(
                    "parameter {name:?} must be one of {}, not {:?}",
                    allowed.join(", "),
                    truncate(v)
                ))
            }),
        }
    }
}

/// A value quoted back in an error message, cut to a readable length.
fn truncate(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 64;
    if text.chars().count() <= SHOWN_CHARS_MAX {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(SHOWN_CHARS_MAX).collect();
        cut.push('…');
        cut
    }
}

/// A topic name as Kafka allows it (ASCII letters, digits, `.`, `_`, `-`; at
/// most 249 characters; not `.` or `..`).
pub fn topic_name(name: &str) -> Result<&str, BadParam> {
    weir_metadata::names::validate_topic_name(name)
        .map(|()| name)
        .map_err(|reason| {
            BadParam(format!(
                "{:?} is not a valid topic name: {reason}",
                truncate(name)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decodes_form_encoding() {
        let q = Query::parse(Some("a=1&b=x+y%2Fz&c=&d")).unwrap();
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x y/z"));
        assert_eq!(q.get("c"), None);
        assert_eq!(q.get("d"), None);
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn malformed_escapes_and_huge_queries_are_refused() {
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%4")).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err(), "not UTF-8");
        assert!(Query::parse(Some(&"a=1&".repeat(40))).is_err());
        assert!(Query::parse(Some(&"x".repeat(5000))).is_err());
    }

    #[test]
    fn numbers_are_checked_for_form_and_range() {
        let q = Query::parse(Some(
            "offset=abc&partition=-1&big=99999999999999999999&ok=7",
        ))
        .unwrap();
        let e = q.int("offset", 0, i64::MAX).unwrap_err();
        assert!(e.0.contains("\"offset\" must be a whole number"), "{}", e.0);
        let e = q.int("partition", 0, i64::from(i32::MAX)).unwrap_err();
        assert!(e.0.contains("between 0 and"), "{}", e.0);
        assert!(q.int("big", 0, i64::MAX).is_err());
        assert_eq!(q.int("ok", 0, 10).unwrap(), Some(7));
        assert_eq!(q.int("none", 0, 10).unwrap(), None);
    }

    #[test]
    fn choices_and_pages() {
        let q = Query::parse(Some("format=hex&page=0")).unwrap();
        assert_eq!(q.choice("format", &["text", "json", "hex"]).unwrap(), "hex");
        assert_eq!(q.choice("other", &["text", "json"]).unwrap(), "text");
        assert!(q.choice("format", &["text", "json"]).is_err());
        assert!(q.page().is_err());
    }

    #[test]
    fn odd_topic_names_are_refused() {
        assert!(topic_name("orders.v1_x-y").is_ok());
        let long = "x".repeat(250);
        for bad in ["", ".", "..", "a/b", "<script>", "a b", long.as_str()] {
            assert!(topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
