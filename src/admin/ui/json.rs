//! Reports as pretty-printed, highlighted JSON. The JSON comes from outsiders (any sender may
//! post a report), so every key and string goes through the escaper before it is wrapped.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped};
use serde_json::Value;

/// Spaces per nesting level.
const INDENT: usize = 2;

/// `value` indented, each token in a `<span>` whose class names its kind (`k` key, `s`
/// string, `n` number, `b` true, false or null), for a `<pre>`.
pub fn highlighted(value: &Value) -> Markup {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    PreEscaped(out)
}

/// The JSON as a download: two-space indentation, keys sorted (serde_json's map is ordered).
pub fn pretty(value: &Value) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    body
}

fn span(out: &mut String, class: &str, text: &str) {
    let _ = write!(out, "<span class=\"{class}\">");
    // The escaper makes `<`, `>`, `&` and `"` harmless, inside the element and out.
    let _ = maud::Escaper::new(out).write_str(text);
    out.push_str("</span>");
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', depth * INDENT));
}

/// Written recursively; serde_json refuses documents nested deeper than 128 levels, so the
/// depth here is bounded by what could be parsed.
fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Null => span(out, "b", "null"),
        Value::Bool(b) => span(out, "b", if *b { "true" } else { "false" }),
        Value::Number(n) => span(out, "n", &n.to_string()),
        Value::String(s) => span(out, "s", &Value::String(s.clone()).to_string()),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                span(out, "k", &Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_classed_and_indented() {
        let v = serde_json::json!({"a": [1, true, null], "b": "x", "c": {}});
        let html = highlighted(&v).into_string();
        assert_eq!(
            html,
            "{\n  <span class=\"k\">&quot;a&quot;</span>: [\n    <span class=\"n\">1</span>,\n    \
             <span class=\"b\">true</span>,\n    <span class=\"b\">null</span>\n  ],\n  \
             <span class=\"k\">&quot;b&quot;</span>: <span class=\"s\">&quot;x&quot;</span>,\n  \
             <span class=\"k\">&quot;c&quot;</span>: {}\n}"
        );
    }

    #[test]
    fn markup_in_keys_and_strings_is_escaped() {
        let v = serde_json::json!({
            "<script>alert(1)</script>": "</pre><img src=x onerror=alert(2)>",
            "organization-name": "\"><script>alert(3)</script>",
        });
        let html = highlighted(&v).into_string();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("</pre"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
    }
}
