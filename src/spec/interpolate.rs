//! `${VAR}` interpolation, as compose users know it.
//!
//! Forms: `${VAR}`, `${VAR:-default}` (default when unset or empty), `${VAR-default}`
//! (default when unset), `${VAR:?message}` (error when unset or empty), `${VAR?message}`
//! (error when unset), `${VAR:+other}` (other when set and not empty, else empty),
//! `${VAR+other}` (other when set), and `$$` for a literal `$`. A default, message or
//! other may itself hold `${...}` (`${A:-${B:-1.0}}`), interpolated only when it is used,
//! as Compose does. A `$` not followed by `{` or `$` is literal. A `${VAR}` with no value
//! is an error: an empty password should be a decision, not an accident.

/// Why a string could not be interpolated; `offset` is the byte offset in the input
/// where the offending `${` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolateError {
    pub offset: usize,
    pub message: String,
    /// The variable, when the error is only that it has no value (`${VAR}` with `VAR`
    /// unset): the caller may know better why (a commit is not passed `VAR`).
    pub unset: Option<String>,
}

/// Replace every `${...}` in `input` using `lookup`.
pub fn interpolate(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            let ch = input[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let start = i;
                let close = closing_brace(input, i + 2).ok_or(InterpolateError {
                    offset: start,
                    message: "unterminated ${ in value (missing `}`)".into(),
                    unset: None,
                })?;
                let body = &input[i + 2..close];
                out.push_str(&expand(body, lookup).map_err(|e| e.at(start))?);
                i = close + 1;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The `}` that closes the `${` whose body begins at `from`: nested `${...}` (in a
/// default) and `$$` are skipped over.
fn closing_brace(input: &str, from: usize) -> Option<usize> {
    let bytes = input.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Why one `${...}` has no value.
enum ExpandError {
    /// The variable is not set.
    Unset(String),
    Other(String),
}
use ExpandError::{Other, Unset};

impl ExpandError {
    fn at(self, offset: usize) -> InterpolateError {
        match self {
            Unset(name) => InterpolateError {
                offset,
                message: format!(
                    "${{{name}}} has no value: set {name} in the environment or the env file"
                ),
                unset: Some(name),
            },
            Other(message) => InterpolateError {
                offset,
                message,
                unset: None,
            },
        }
    }
}

fn expand(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let name_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let name = &body[..name_end];
    let op = &body[name_end..];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Other(format!("bad variable name in ${{{body}}}")));
    }
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    if op.is_empty() {
        return value.ok_or_else(|| Unset(name.to_string()));
    }
    // A default, message or alternative is interpolated itself, only when it is used.
    let inner = |text: &str| interpolate(text, lookup).map_err(|e| Other(e.message));
    if let Some(default) = op.strip_prefix(":-") {
        return if set_nonempty {
            Ok(value.unwrap())
        } else {
            inner(default)
        };
    }
    if let Some(default) = op.strip_prefix('-') {
        return match value {
            Some(v) => Ok(v),
            None => inner(default),
        };
    }
    if let Some(message) = op.strip_prefix(":?") {
        return if set_nonempty {
            Ok(value.unwrap())
        } else {
            Err(Other(format!(
                "${{{name}}} is required: {}",
                inner(message)?
            )))
        };
    }
    if let Some(message) = op.strip_prefix('?') {
        return match value {
            Some(v) => Ok(v),
            None => Err(Other(format!(
                "${{{name}}} is required: {}",
                inner(message)?
            ))),
        };
    }
    if let Some(other) = op.strip_prefix(":+") {
        return if set_nonempty {
            inner(other)
        } else {
            Ok(String::new())
        };
    }
    if let Some(other) = op.strip_prefix('+') {
        return match value {
            Some(_) => inner(other),
            None => Ok(String::new()),
        };
    }
    Err(Other(format!("unsupported interpolation ${{{body}}}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("ada".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(interpolate("hi ${USER}!", &env).unwrap(), "hi ada!");
        assert_eq!(interpolate("$$HOME $5", &env).unwrap(), "$HOME $5");
        assert_eq!(interpolate("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY-x}", &env).unwrap(), "");
        assert_eq!(interpolate("${NOPE-}", &env).unwrap(), "");
    }

    #[test]
    fn a_default_may_hold_another_reference_as_in_compose() {
        assert_eq!(interpolate("app:${A:-${B:-1.0}}", &env).unwrap(), "app:1.0");
        assert_eq!(interpolate("${A:-${USER:-1.0}}-x", &env).unwrap(), "ada-x");
        assert_eq!(interpolate("${USER:-${NOPE}}", &env).unwrap(), "ada");
        assert_eq!(interpolate("${A-${B-${USER}}}", &env).unwrap(), "ada");
        assert_eq!(
            interpolate("${A:-$${literal}}", &env).unwrap(),
            "${literal}"
        );
        let err = interpolate("x ${A:-${NOPE}}", &env).unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(
            err.message.contains("${NOPE} has no value"),
            "{}",
            err.message
        );
        assert!(interpolate("${A:-${B:-1.0}", &env).is_err(), "unterminated");
    }

    #[test]
    fn an_alternative_is_used_only_when_the_variable_is_set() {
        assert_eq!(interpolate("${USER:+yes}", &env).unwrap(), "yes");
        assert_eq!(interpolate("${EMPTY:+yes}", &env).unwrap(), "");
        assert_eq!(interpolate("${EMPTY+yes}", &env).unwrap(), "yes");
        assert_eq!(interpolate("${NOPE+yes}", &env).unwrap(), "");
        let err = interpolate("${NOPE?set ${USER} first}", &env).unwrap_err();
        assert!(
            err.message.contains("is required: set ada first"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_variable_is_an_error_at_its_offset() {
        let err = interpolate("ab ${NOPE}", &env).unwrap_err();
        assert_eq!(err.offset, 3);
        assert!(
            err.message.contains("${NOPE} has no value"),
            "{}",
            err.message
        );
        assert_eq!(err.unset.as_deref(), Some("NOPE"));
        let err = interpolate("${EMPTY:?must be set}", &env).unwrap_err();
        assert!(err.message.contains("must be set"));
        assert_eq!(err.unset, None);
        assert!(interpolate("${UNCLOSED", &env).is_err());
    }
}
