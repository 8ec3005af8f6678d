//! `${VAR}` and `${VAR:-default}` expansion in the config file text.

/// Expands `${VAR}` and `${VAR:-default}` using `lookup`; `$${` is a literal `${`.
/// Full-line comments are left as written.
///
/// An unset variable without a default is an error naming it, so a typo in a
/// variable name stops start-up instead of silently producing an empty value.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            expand_line(line, &lookup, &mut out).map_err(|e| format!("line {}: {e}", n + 1))?;
        }
    }
    Ok(out)
}

fn expand_line(
    line: &str,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), String> {
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err("unterminated `${` in variable reference".to_owned());
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name `{name}` in `${{{body}}}`"));
        }
        match (lookup(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"
                ));
            }
            (Some(v), None) => out.push_str(&v),
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/srv/tollgate".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(
            expand_env("path = \"${HOME_DIR}/data\"", env).unwrap(),
            "path = \"/srv/tollgate/data\""
        );
        assert_eq!(expand_env("${MISSING:-x}", env).unwrap(), "x");
        assert_eq!(expand_env("${EMPTY:-fallback}", env).unwrap(), "fallback");
        assert_eq!(expand_env("${EMPTY}", env).unwrap(), "");
        assert_eq!(
            expand_env("cost $5 and $${LITERAL}", env).unwrap(),
            "cost $5 and ${LITERAL}"
        );
    }

    #[test]
    fn comments_are_not_expanded() {
        let text = "# use ${VAR} here\npath = \"${HOME_DIR}\"\n";
        assert_eq!(
            expand_env(text, env).unwrap(),
            "# use ${VAR} here\npath = \"/srv/tollgate\"\n"
        );
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let err = expand_env("x = 1\na = \"${NOPE}\"", env).unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(
            expand_env("${unterminated", env)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            expand_env("${bad-name}", env)
                .unwrap_err()
                .contains("invalid variable name")
        );
    }
}
