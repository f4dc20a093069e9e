//! The few SMTP pieces a probe needs: reading one reply (multi-line, bounded) and sending a
//! command line (RFC 5321 §4.2).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; servers stay well under this.
pub const MAX_LINE: usize = 1000;
/// More lines than any EHLO answer has (one per extension).
pub const MAX_LINES: usize = 100;

/// One reply: the code and the text of each line (without code, separator or CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, the same on every line.
    pub code: u16,
    /// The text after `NNN-` / `NNN ` on each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// Whether an EHLO reply lists `keyword` (case-insensitive) as an extension: every line
    /// but the first (the greeting) starts with an EHLO keyword.
    pub fn has_extension(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }

    /// The reply as the server sent it, for details (`250-a / 250 b`), cut to 300 characters.
    pub fn summary(&self) -> String {
        let mut text = self
            .lines
            .iter()
            .map(|l| format!("{} {l}", self.code))
            .collect::<Vec<_>>()
            .join(" / ");
        if text.len() > 300 {
            let mut cut = 300;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// Reads one complete reply. Errors name what was wrong (for the probe's detail).
pub async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, String> {
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        if lines.len() == MAX_LINES {
            return Err(format!("reply longer than {MAX_LINES} lines"));
        }
        let line = read_line(reader).await?;
        let (this_code, last, text) = parse_line(&line)?;
        if *code.get_or_insert(this_code) != this_code {
            return Err(format!("reply code changed within a reply: {line:?}"));
        }
        lines.push(text.to_string());
        if last {
            return Ok(Reply {
                code: this_code,
                lines,
            });
        }
    }
}

/// One line without its CRLF (a bare LF is accepted too), at most [`MAX_LINE`] octets.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let buf = reader
            .fill_buf()
            .await
            .map_err(|e| format!("reading a reply: {e}"))?;
        if buf.is_empty() {
            return Err("connection closed by the server".into());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE + 2 {
            return Err(format!("reply line longer than {MAX_LINE} octets"));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return String::from_utf8(line).map_err(|_| "reply line is not UTF-8".into());
        }
    }
}

/// `NNN-text` (more follow), `NNN text` or `NNN` (last line).
fn parse_line(line: &str) -> Result<(u16, bool, &str), String> {
    let bad = || format!("not an SMTP reply line: {:?}", truncate(line));
    let digits = line.get(..3).ok_or_else(bad)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&digits.as_bytes()[0])
    {
        return Err(bad());
    }
    let code = digits.parse().map_err(|_| bad())?;
    match line.as_bytes().get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(bad()),
    }
}

fn truncate(line: &str) -> &str {
    let mut cut = line.len().min(80);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    &line[..cut]
}

/// Sends `command` followed by CRLF.
pub async fn send<W: AsyncWrite + Unpin>(writer: &mut W, command: &str) -> Result<(), String> {
    let mut line = Vec::with_capacity(command.len() + 2);
    line.extend_from_slice(command.as_bytes());
    line.extend_from_slice(b"\r\n");
    writer
        .write_all(&line)
        .await
        .map_err(|e| format!("sending {}: {e}", command_word(command)))?;
    writer
        .flush()
        .await
        .map_err(|e| format!("sending {}: {e}", command_word(command)))
}

fn command_word(command: &str) -> &str {
    command.split(' ').next().unwrap_or(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn parse(bytes: &[u8]) -> Result<Reply, String> {
        read_reply(&mut BufReader::new(bytes)).await
    }

    #[tokio::test]
    async fn multi_line_reply_and_extensions() {
        let reply =
            parse(b"250-mx.example Hello\r\n250-SIZE 1000\r\n250-starttls\r\n250 8BITMIME\r\n")
                .await
                .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines.len(), 4);
        assert!(reply.has_extension("STARTTLS"));
        assert!(reply.has_extension("8bitmime"));
        // The greeting line is not an extension.
        assert!(!reply.has_extension("mx.example"));
    }

    #[tokio::test]
    async fn greeting_mentioning_starttls_is_not_the_extension() {
        let reply = parse(b"250 STARTTLS\r\n").await.unwrap();
        assert!(!reply.has_extension("STARTTLS"));
        let reply = parse(b"250-mx\r\n250-X-STARTTLS\r\n250 STARTTLSX\r\n")
            .await
            .unwrap();
        assert!(!reply.has_extension("STARTTLS"));
    }

    #[tokio::test]
    async fn bare_code_and_bare_lf_are_accepted() {
        assert_eq!(parse(b"220\n").await.unwrap().code, 220);
    }

    #[tokio::test]
    async fn bad_replies_are_named() {
        let long = format!("220 {}\r\n", "x".repeat(MAX_LINE));
        assert!(
            parse(long.as_bytes())
                .await
                .unwrap_err()
                .contains("longer than")
        );
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert!(parse(many.as_bytes()).await.unwrap_err().contains("lines"));
        assert!(
            parse(b"250-a\r\n251 b\r\n")
                .await
                .unwrap_err()
                .contains("changed")
        );
        assert!(
            parse(b"HTTP/1.1 400\r\n")
                .await
                .unwrap_err()
                .contains("not an SMTP")
        );
        assert!(parse(b"220-a\r\n").await.unwrap_err().contains("closed"));
        assert!(parse(b"220xhello\r\n").await.is_err());
        assert!(parse(b"120 x\r\n").await.is_err());
    }
}
