//! Lexer: query text → tokens with byte spans.
//!
//! Hand-written and total: every input, however broken, yields tokens or one
//! error with a span; it never panics (see the property test below). Period
//! literals are recognised here (`2024-12`, `2024-Q4`), so `2024-12` is a month
//! while `2024 - 12` is arithmetic.

use super::diag::{Diag, Span};

/// The longest name (column, measure, parameter) a query may use.
pub const MAX_NAME_BYTES: usize = 128;

/// The longest text literal a query may hold: a stored code is at most
/// [`crate::ingest::convert::MAX_CODE_BYTES`], and a title or label needs no more.
pub const MAX_STRING_BYTES: usize = 1024;

/// Refuses a name (starting at byte `start`) of more than [`MAX_NAME_BYTES`].
fn name_fits(start: usize, len: usize) -> Result<(), Diag> {
    if len > MAX_NAME_BYTES {
        return Err(Diag::new(
            Span::new(start, start + MAX_NAME_BYTES),
            format!("this name is {len} characters; a name has at most {MAX_NAME_BYTES}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// `$name`: a parameter.
    Param(String),
    Number(f64),
    Str(String),
    /// A period literal as written: `2024-12`, `2024-Q4`.
    Period(String),
    Sym(&'static str),
    Newline,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

const SYMBOLS: [&str; 17] = ["..", "!=", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "(", ")", ",", "%", ":", "@"];

/// Splits `text` into tokens; comments (`#` to end of line) are dropped,
/// newlines kept (they separate stages).
pub fn lex(text: &str) -> Result<Vec<Token>, Diag> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b'\n' => {
                out.push(Token { tok: Tok::Newline, span: Span::new(i, i + 1) });
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') => {
                            return Err(Diag::new(Span::new(start, i), "unterminated string")
                                .hint("close the string with \" on the same line"));
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if matches!(bytes.get(i + 1), Some(b'"' | b'\\')) => {
                            s.push(bytes[i + 1] as char);
                            i += 2;
                        }
                        Some(_) => {
                            let ch = text[i..].chars().next().expect("in bounds");
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if s.len() > MAX_STRING_BYTES {
                    return Err(Diag::new(
                        Span::new(start, (start + 1).min(i)),
                        format!(
                            "this text is {} bytes; at most {MAX_STRING_BYTES} (longer than any stored code can be)",
                            s.len()
                        ),
                    ));
                }
                out.push(Token { tok: Tok::Str(s), span: Span::new(start, i) });
            }
            b'$' => {
                i += 1;
                let name_start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if i == name_start {
                    return Err(Diag::new(Span::new(start, i), "`$` must be followed by a parameter name"));
                }
                name_fits(start, i - name_start)?;
                out.push(Token { tok: Tok::Param(text[name_start..i].to_string()), span: Span::new(start, i) });
            }
            b'0'..=b'9' => {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                // A four-digit year glued to -MM or -Qn is a period literal.
                if i - start == 4 && bytes.get(i) == Some(&b'-') {
                    let rest = &bytes[i + 1..];
                    let len = match rest {
                        [b'Q' | b'q', b'1'..=b'4', ..] => 2,
                        [a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => 2,
                        _ => 0,
                    };
                    let glued = rest.get(len).is_none_or(|b| !b.is_ascii_alphanumeric());
                    if len > 0 && glued {
                        i += 1 + len;
                        out.push(Token { tok: Tok::Period(text[start..i].to_string()), span: Span::new(start, i) });
                        continue;
                    }
                }
                if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                if matches!(bytes.get(i), Some(b'e' | b'E'))
                    && (bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                        || (matches!(bytes.get(i + 1), Some(b'-' | b'+'))
                            && bytes.get(i + 2).is_some_and(u8::is_ascii_digit)))
                {
                    i += 2;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let n: f64 = text[start..i]
                    .parse()
                    .map_err(|_| Diag::new(Span::new(start, i), format!("bad number `{}`", &text[start..i])))?;
                if !n.is_finite() {
                    return Err(Diag::new(
                        Span::new(start, i),
                        "this number is too large (the largest is about 1.8e308)".to_string(),
                    ));
                }
                out.push(Token { tok: Tok::Number(n), span: Span::new(start, i) });
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                name_fits(start, i - start)?;
                out.push(Token { tok: Tok::Ident(text[start..i].to_string()), span: Span::new(start, i) });
            }
            _ => {
                let sym = SYMBOLS.iter().find(|s| text[i..].starts_with(**s));
                match sym {
                    Some(s) => {
                        i += s.len();
                        out.push(Token { tok: Tok::Sym(s), span: Span::new(start, i) });
                    }
                    None => {
                        let ch = text[i..].chars().next().expect("in bounds");
                        return Err(Diag::new(Span::new(i, i + ch.len_utf8()), format!("unexpected character `{ch}`")));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn periods_numbers_params_and_comments() {
        assert_eq!(
            toks("where period in 2023-01 .. 2024-Q4 # c\n$year - 1 1e8 2024 - 12"),
            vec![
                Tok::Ident("where".into()),
                Tok::Ident("period".into()),
                Tok::Ident("in".into()),
                Tok::Period("2023-01".into()),
                Tok::Sym(".."),
                Tok::Period("2024-Q4".into()),
                Tok::Newline,
                Tok::Param("year".into()),
                Tok::Sym("-"),
                Tok::Number(1.0),
                Tok::Number(1e8),
                Tok::Number(2024.0),
                Tok::Sym("-"),
                Tok::Number(12.0),
            ]
        );
    }

    #[test]
    fn strings_and_errors_have_spans() {
        assert_eq!(toks(r#""a \"b\"""#), vec![Tok::Str("a \"b\"".into())]);
        let e = lex("where x = \"open").unwrap_err();
        assert_eq!(e.span, Span::new(10, 15));
        let e = lex("sum value ; x").unwrap_err();
        assert_eq!((e.span, e.message.as_str()), (Span::new(10, 11), "unexpected character `;`"));
    }

    #[test]
    fn never_panics_on_any_bytes() {
        // A cheap exhaustive-ish sweep: every pair of interesting characters.
        let alphabet = [
            "2024", "-", "Q", "1", "12", ".", "..", "\"", "\\", "$", "e", "é", "#", "\n", " ", "x", "(", "!", "=",
            "9e", "+",
        ];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let _ = lex(&format!("{a}{b}{c}"));
                }
            }
        }
    }
}
