//! Tiny glob matching (`*` = any run of characters, `?` = one character) for
//! model lists; allocation-free, so it can run on every request.

/// Whether `text` matches `pattern`, ignoring ASCII case.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&t[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether the pattern has wildcards (a literal names one model).
pub(crate) fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("gpt-*", "gpt-4o-mini"));
        assert!(matches("*", ""));
        assert!(matches("*-mini", "gpt-4o-mini"));
        assert!(!matches("*-mini", "gpt-4o"));
        assert!(matches("o?-*", "o3-mini"));
        assert!(matches("openai/*", "openai/gpt-4o"));
        assert!(!matches("openai/*", "anthropic/claude"));
        assert!(matches("GPT-4O", "gpt-4o"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(!matches("gpt-4o", "gpt-4o-mini"));
        assert!(is_literal("gpt-4o"));
        assert!(!is_literal("gpt-*"));
    }
}
