//! HTML building blocks of the console: escaping, URL encoding, the page
//! frame, pagination and the formats shown for numbers, times and bytes.
//!
//! Owns: every byte of markup the console sends. It must never put text into
//! a page without [`escape`] (or a URL without [`encode_segment`] /
//! [`encode_query`] and then [`escape`]): record keys and values, topic names
//! and group ids are arbitrary, and the page is only safe if nothing from the
//! outside is ever taken for markup.

use std::fmt::Write as _;

/// The text with `& < > " '` replaced by entities: safe in element content and
/// in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so the
/// result is one path segment or one query value whatever it held ('/', '?',
/// '#', '&', spaces, non-ASCII).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Same as [`encode_segment`]: query values need the same treatment.
pub fn encode_query(text: &str) -> String {
    encode_segment(text)
}

/// The console's pages, for the navigation's current-page mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Topics,
    Messages,
    Groups,
    Reassignments,
    None,
}

/// A whole page: the frame (skip link, navigation, footer) around `body`,
/// which must already be escaped markup.
pub fn page(title: &str, section: Section, body: &str) -> String {
    let nav = [
        (Section::Overview, "/", "Overview"),
        (Section::Topics, "/topics", "Topics"),
        (Section::Messages, "/messages", "Messages"),
        (Section::Groups, "/groups", "Consumer groups"),
        (Section::Reassignments, "/reassignments", "Reassignments"),
    ];
    let mut links = String::new();
    for (s, href, label) in nav {
        let current = if s == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(links, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Weir console</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">Weir</a>\
         <nav aria-label=\"Main\"><ul>{links}</ul></nav></header>\
         <main id=\"main\" tabindex=\"-1\">{body}</main>\
         <footer class=\"foot\">Read-only console, served by the broker itself.</footer>\
         </body></html>\n",
        title = escape(title),
    )
}

/// Links to the pages around `page` (1-based) of `pages`; `href_for(n)` gives
/// page n's URL (unescaped). Empty when there is one page.
pub fn pagination(page: usize, pages: usize, href_for: impl Fn(usize) -> String) -> String {
    if pages <= 1 {
        return String::new();
    }
    let mut out = String::from("<nav class=\"pager\" aria-label=\"Pages\"><ul>");
    let link = |out: &mut String, n: usize, label: &str, rel: &str| {
        let _ = write!(
            out,
            "<li><a href=\"{}\"{rel}>{label}</a></li>",
            escape(&href_for(n))
        );
    };
    if page > 1 {
        link(&mut out, 1, "First", "");
        link(&mut out, page - 1, "Previous", " rel=\"prev\"");
    }
    let _ = write!(
        out,
        "<li><span aria-current=\"page\">Page {page} of {pages}</span></li>"
    );
    if page < pages {
        link(&mut out, page + 1, "Next", " rel=\"next\"");
        link(&mut out, pages, "Last", "");
    }
    out.push_str("</ul></nav>");
    out
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Bytes in binary units: `0 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate in bytes per second.
pub fn rate(bytes_per_s: f64) -> String {
    format!("{}/s", bytes(bytes_per_s.max(0.0).round() as u64))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the epoch as `2026-11-30 05:15:45.123 UTC`.
pub fn timestamp(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{milli:03} UTC")
}

/// Parses `YYYY-MM-DDTHH:MM[:SS[.mmm]]` (a space may stand for the `T`, and a
/// trailing `Z` is allowed), taken as UTC, into milliseconds since the epoch.
pub fn parse_utc_datetime(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once(['T', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some()
        || !(1..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) if (1..=3).contains(&frac.len()) => {
            let digits: i64 = frac.parse().ok()?;
            (hms, digits * 10i64.pow(3 - frac.len() as u32))
        }
        Some(_) => return None,
        None => (time, 0),
    };
    let mut time_parts = hms.split(':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: i64 = match time_parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if time_parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // Reject 2026-02-31 and the like: the date must come back unchanged.
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_markup_and_attribute_breakouts() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("plain ü"), "plain ü");
    }

    #[test]
    fn encode_segment_keeps_only_unreserved_characters() {
        assert_eq!(encode_segment("a.b_c-d~e"), "a.b_c-d~e");
        assert_eq!(encode_segment("a/b?c#d&e f"), "a%2Fb%3Fc%23d%26e%20f");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn numbers_and_bytes_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
    }

    #[test]
    fn timestamps_round_trip_through_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(timestamp(1_796_102_145_123), "2026-12-01 05:15:45.123 UTC");
        assert_eq!(
            parse_utc_datetime("2026-12-01T05:15:45.123Z"),
            Some(1_796_102_145_123)
        );
        assert_eq!(parse_utc_datetime("1970-01-01 00:01"), Some(60_000));
        assert_eq!(
            parse_utc_datetime("2024-02-29T00:00"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "",
            "2026-02-31T00:00",
            "2026-13-01T00:00",
            "2026-01-01",
            "x-y-zT1:2",
            "2026-01-01T24:00",
        ] {
            assert_eq!(parse_utc_datetime(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pagination_links_neighbours_and_ends() {
        assert_eq!(pagination(1, 1, |n| format!("/t?page={n}")), "");
        let nav = pagination(2, 3, |n| format!("/t?q=a&page={n}"));
        assert!(nav.contains("href=\"/t?q=a&amp;page=1\">First"));
        assert!(nav.contains("rel=\"prev\""));
        assert!(nav.contains("Page 2 of 3"));
        assert!(nav.contains("href=\"/t?q=a&amp;page=3\" rel=\"next\""));
    }

    #[test]
    fn page_frame_has_skip_link_and_marks_current_section() {
        let html = page("<Topics>", Section::Topics, "<p>x</p>");
        assert!(html.contains("<title>&lt;Topics&gt; · Weir console</title>"));
        assert!(html.contains("class=\"skip\" href=\"#main\""));
        assert!(html.contains("<a href=\"/topics\" aria-current=\"page\">Topics</a>"));
        assert!(!html.contains("<script>"), "no inline script");
    }
}
