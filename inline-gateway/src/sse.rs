//! Server-sent events: an incremental parser for upstream streams (events
//! may be split across chunks anywhere) and the writer for what we send.

/// One event: its `event:` name (Anthropic names every event; OpenAI none)
/// and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Feeds on raw bytes, yields complete events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// A line not yet ended by `\n`.
    partial: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let (line, rest) = chunk.split_at(pos);
            chunk = rest.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                self.line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, out);
                whole.clear();
                self.partial = whole;
            }
        }
        self.partial.extend_from_slice(chunk);
    }

    /// The stream ended: an event not followed by a blank line still counts.
    pub(crate) fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data || self.event.is_some() {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.has_data = false;
        self.event = None;
    }
}

/// Appends one event to `out`.
pub(crate) fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(text: &str, piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(piece) {
            p.feed(chunk, &mut out);
        }
        p.finish(&mut out);
        out
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let text = "event: message_start\ndata: {\"a\":1}\n\n: keepalive\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let expected = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: None,
                data: "x\ny".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ];
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(parse_in_pieces(text, piece), expected, "piece {piece}");
        }
    }

    #[test]
    fn a_last_event_without_blank_line_is_kept() {
        assert_eq!(
            parse_in_pieces("data: tail", 4),
            vec![SseEvent {
                event: None,
                data: "tail".into()
            }]
        );
    }

    #[test]
    fn writer_round_trips() {
        let mut out = Vec::new();
        write_event(&mut out, Some("ping"), "{\"type\":\"ping\"}");
        write_event(&mut out, None, "a\nb");
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\ndata: a\ndata: b\n\n"
        );
        assert_eq!(
            parse_in_pieces(&String::from_utf8(out).unwrap(), 5).len(),
            2
        );
    }
}
