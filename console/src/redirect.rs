//! Where the console may send a browser back to: only a path of this
//! console. Every redirect to a place named by the request (`?next=` of the
//! language switch, of the sign-in form, of single sign-on) goes through
//! [`local_path`], so there is one rule to get right.
//!
//! The rule is strict because browsers are lenient: they drop tabs and line
//! breaks inside URLs, read `\` as `/`, and take `//host` as another site, so
//! `/<TAB>/evil.example` becomes `//evil.example`. A path is accepted only if
//! it is printable ASCII, starts with one `/` followed by neither `/` nor `\`,
//! holds no backslash and no `.`/`..` segment, and stays so once its percent
//! escapes are decoded (repeatedly: `%2509` is `%09` is a tab). Anything else
//! becomes `/`. It must never answer with a URL that has a scheme or host.

/// Longest `next` kept (longer ones become `/`).
pub const MAX_NEXT_BYTES: usize = 2048;

/// Percent-decoding rounds checked (`%25` nests); deeper nesting is refused.
const MAX_DECODE_ROUNDS: usize = 4;

/// Look-alikes of `/` and `\` that some parsers fold into them.
const SLASH_LIKE: &[char] = &[
    '\u{2044}', // fraction slash
    '\u{2215}', // division slash
    '\u{2216}', // set minus
    '\u{29F5}', // reverse solidus operator
    '\u{29F8}', // big solidus
    '\u{29F9}', // big reverse solidus
    '\u{FE68}', // small reverse solidus
    '\u{FF0F}', // fullwidth solidus
    '\u{FF3C}', // fullwidth reverse solidus
];

/// `next` if it is a safe local path, else `/`.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        Some(n) => {
            tracing::info!(next = %n.escape_debug(), "refused a redirect target");
            metrics::counter!("console_redirects_refused_total").increment(1);
            "/".to_string()
        }
        None => "/".to_string(),
    }
}

/// Whether `s` names a path of this console and nothing else (see the module).
pub fn is_local_path(s: &str) -> bool {
    if s.len() > MAX_NEXT_BYTES {
        return false;
    }
    // The raw form: printable ASCII only (what a browser would clean up or
    // re-interpret never reaches it).
    if !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return false;
    }
    let mut form: Vec<u8> = s.as_bytes().to_vec();
    for _ in 0..MAX_DECODE_ROUNDS {
        if !form_is_safe(&form) {
            return false;
        }
        match percent_decode(&form) {
            Decoded::Same => return true,
            Decoded::Changed(next) => form = next,
            Decoded::Malformed => return false,
        }
    }
    false
}

/// One (decoded or raw) form: one leading `/`, no backslash, no control
/// character, no slash look-alike, no dot segment in the path.
fn form_is_safe(bytes: &[u8]) -> bool {
    match bytes {
        [b'/'] => {}
        [b'/', second, ..] if *second != b'/' && *second != b'\\' => {}
        _ => return false,
    }
    if bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
        return false;
    }
    let text = String::from_utf8_lossy(bytes);
    if text
        .chars()
        .any(|c| c.is_control() || SLASH_LIKE.contains(&c) || c == '\u{FFFD}')
    {
        return false;
    }
    let path = text.split(['?', '#']).next().unwrap_or("");
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

enum Decoded {
    Same,
    Changed(Vec<u8>),
    Malformed,
}

fn percent_decode(bytes: &[u8]) -> Decoded {
    if !bytes.contains(&b'%') {
        return Decoded::Same;
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => return Decoded::Malformed,
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Decoded::Changed(out)
}

/// Known bypasses (OWASP's unvalidated-redirects cheat sheet, PortSwigger's
/// URL-validation bypass list, and the one reproduced in issue 23), as the
/// decoded `next` value a handler receives. All must become `/` (the unit
/// tests and `tests/redirects.rs`, through the real endpoints, check).
pub const KNOWN_BYPASSES: &[&str] = &[
    "//evil.example",
    "//evil.example/",
    "///evil.example",
    "////evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\r\n/evil.example",
    "/ /evil.example",
    "/\u{0}/evil.example",
    "/\u{7f}/evil.example",
    "/\u{85}/evil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%0D%0A/evil.example",
    "/%00/evil.example",
    "/%2F/evil.example",
    "/%2f/evil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%5C/evil.example",
    "/%252F/evil.example",
    "/%2509/evil.example",
    "/%25252525252F/evil.example",
    "/%C2%85/evil.example",
    "/%E2%81%84evil.example",
    "/%EF%BC%8Fevil.example",
    "/%zz",
    "/%",
    "https:evil.example",
    "https://evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "data:text/html,x",
    "evil.example",
    "@evil.example",
    "",
    "/../..//evil.example",
    "/./..//evil.example",
    "/%2e%2e/%2e%2e//evil.example",
    "/..",
    "/ops/../../x",
    "/\u{FF0F}evil.example",
    "/\u{2215}evil.example",
    "/\u{2044}evil.example",
    "/\u{FF3C}evil.example",
    "/\u{3000}/evil.example",
    "/clerk/bills\\..\\..\\evil",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bypasses_are_refused() {
        for b in KNOWN_BYPASSES {
            assert!(!is_local_path(b), "accepted {b:?}");
            assert_eq!(local_path(Some(b)), "/", "{b:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_NEXT_BYTES));
        assert!(!is_local_path(&long));
    }

    #[test]
    fn the_consoles_own_paths_are_kept() {
        for ok in [
            "/",
            "/ops",
            "/ops/meters?q=M-1&hours=24",
            "/ops/meters/M%2F1",
            "/clerk/accounts?q=%ED%95%9C%EB%B9%9B",
            "/clerk/bills?next=//x",
            "/ops#top",
            "/a%2Fb/c",
            "/file.csv",
            "/..x/.y",
        ] {
            assert!(is_local_path(ok), "refused {ok:?}");
            assert_eq!(local_path(Some(ok)), ok);
        }
        assert_eq!(local_path(None), "/");
    }
}
