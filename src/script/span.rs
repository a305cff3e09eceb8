//! Mapping Rhai positions (line, character column) to byte spans, widened to the whole call
//! they point into, so a diagnostic underlines `subnet(prod, "web", "10.0.1.0/24")`, not `s`.

use rhai::Position;

use crate::model::Span;

/// A script text, named for diagnostics.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub name: String,
    pub text: String,
    /// Where each line starts: every declaration asks for its span, so finding a line must
    /// not mean reading the text from the top (a 10,000-subnet script would read it 10,000
    /// times).
    line_starts: Vec<usize>,
}

impl Source {
    pub(crate) fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { name: name.into(), text, line_starts }
    }

    /// Byte offset of a 1-based line and character column.
    fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else { return self.text.len() };
        offset(&self.text[start..], 1, column) + start
    }
}

/// Where a span starts, as `NAME:LINE:COLUMN`.
pub(crate) fn location(sources: &[Source], span: Span) -> Option<String> {
    let src = sources.get(span.source as usize)?;
    let before = src.text.get(..span.start)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some(format!("{}:{line}:{column}", src.name))
}

/// The span of the call at `pos` in the source named `source` (the latest source when it
/// has no name), widened to the whole call.
pub(crate) fn span_at(sources: &[Source], source: Option<&str>, pos: Position) -> Span {
    let id = source
        .and_then(|name| sources.iter().rposition(|s| s.name == name))
        .unwrap_or(sources.len().saturating_sub(1));
    let Some(src) = sources.get(id) else {
        return Span::default();
    };
    let (Some(line), Some(col)) = (pos.line(), pos.position()) else {
        return Span { source: id as u32, start: src.text.len(), len: 0 };
    };
    let (start, len) = widen(&src.text, src.offset(line, col));
    Span { source: id as u32, start, len }
}

/// Byte offset of a 1-based line and character column.
pub(crate) fn offset(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    let line_text = &text[start..];
    let line_end = line_text.find('\n').unwrap_or(line_text.len());
    start + line_text.char_indices().nth(column.saturating_sub(1)).map_or(line_end, |(i, _)| i.min(line_end))
}

/// The span of the call or expression starting at `at`: an identifier (with a receiver
/// chain like `prod.` before it), and its parenthesised arguments when a `(` follows.
pub(crate) fn widen(text: &str, at: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let at = at.min(text.len());
    // Rhai may point at the `.` of a method call; step onto the name.
    let mut start = at;
    if bytes.get(start) == Some(&b'.') {
        start += 1;
    }
    let mut end = start;
    while end < bytes.len() && is_ident(bytes[end]) {
        end += 1;
    }
    // Include a receiver chain: `prod.subnet(` underlines from `prod`.
    let mut left = start;
    while left > 0 && bytes[left - 1] == b'.' {
        let mut l = left - 1;
        while l > 0 && is_ident(bytes[l - 1]) {
            l -= 1;
        }
        if l == left - 1 {
            break;
        }
        left = l;
    }
    let mut j = end;
    while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
        j += 1;
    }
    if bytes.get(j) == Some(&b'(')
        && let Some(close) = matching_paren(text, j)
    {
        end = close + 1;
    }
    if end == left {
        // Not an identifier: underline one character (or the end of the text).
        return (left, usize::from(left < text.len()));
    }
    (left, end - left)
}

/// Index of the `)` matching the `(` at `open`, skipping string literals.
fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'`' | b'\'' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return (bytes[i] == b')').then_some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_characters_not_bytes() {
        let text = "let a = 1;\nlet é = vpc(\"x\");";
        assert_eq!(offset(text, 2, 1), 11);
        assert_eq!(&text[offset(text, 2, 9)..offset(text, 2, 12)], "vpc");
    }

    #[test]
    fn indexed_lines_give_the_same_offsets() {
        let text = "let a = 1;\n\nlet é = vpc(\"x\");\nlast";
        let source = Source::new("t", text);
        for line in 0..7 {
            for column in 0..20 {
                assert_eq!(source.offset(line, column), offset(text, line, column), "{line}:{column}");
            }
        }
    }

    #[test]
    fn widens_to_the_whole_call() {
        let text = r#"let s = subnet(prod, "web", "10.0.1.0/24"); x"#;
        let (start, len) = widen(text, 8);
        assert_eq!(&text[start..start + len], r#"subnet(prod, "web", "10.0.1.0/24")"#);
    }

    #[test]
    fn widens_method_calls_to_the_receiver() {
        let text = r#"let d = prod.subnet("db", "10.0.3.0/24");"#;
        let (start, len) = widen(text, 13);
        assert_eq!(&text[start..start + len], r#"prod.subnet("db", "10.0.3.0/24")"#);
        let (start, len) = widen(text, 12);
        assert_eq!(&text[start..start + len], r#"prod.subnet("db", "10.0.3.0/24")"#);
    }

    #[test]
    fn parentheses_inside_strings_do_not_count() {
        let text = r#"assert(false, "a ) b")"#;
        assert_eq!(widen(text, 0), (0, text.len()));
    }

    #[test]
    fn non_identifiers_get_one_character() {
        assert_eq!(widen("  + 1", 2), (2, 1));
        assert_eq!(widen("ab", 2), (2, 0));
    }
}
