//! Turning byte offsets into `line:column` and the key path that holds them.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Renders a path as `pools.text.models.m` / `policy.policies[1].low`.
pub(crate) fn render(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The value at `path` under `table` (each step a map lookup, not a scan: a config with
/// thousands of pools stays linear).
pub(crate) fn value_at<'a, 'i>(
    table: &'a DeTable<'i>,
    path: &[Seg<'_>],
) -> Option<&'a Spanned<DeValue<'i>>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(first) = first else {
        return None;
    };
    let mut current = table.get(*first)?;
    for seg in rest {
        current = match (seg, current.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(*k)?,
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

/// The span of the key `key` inside the table at `path` (the key itself, so the error points
/// at the line that set it), else the table's own span.
pub(crate) fn key_span(
    table: &DeTable<'_>,
    path: &[Seg<'_>],
    key: &str,
) -> Option<std::ops::Range<usize>> {
    let holder = if path.is_empty() {
        return table.get_key_value(key).map(|(k, _)| k.span());
    } else {
        value_at(table, path)?
    };
    match holder.get_ref() {
        DeValue::Table(t) => t
            .get_key_value(key)
            .map(|(k, _)| k.span())
            .or_else(|| Some(holder.span())),
        _ => Some(holder.span()),
    }
}

/// The deepest key path whose key or value contains byte `offset`.
pub(crate) fn path_at(table: &DeTable<'_>, offset: usize) -> String {
    let mut path: Vec<String> = Vec::new();
    walk_table(table, offset, &mut path);
    let segs: Vec<Seg<'_>> = path
        .iter()
        .map(|s| match s.strip_prefix('\u{0}') {
            Some(i) => Seg::Index(i.parse().unwrap_or(0)),
            None => Seg::Key(s),
        })
        .collect();
    render(&segs)
}

fn contains(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        if contains(&key.span(), offset) {
            path.push(key.get_ref().to_string());
            return true;
        }
        let value_span = value.span();
        let inside = contains(&value_span, offset);
        path.push(key.get_ref().to_string());
        if walk_value(value.get_ref(), offset, path) || inside {
            return true;
        }
        path.pop();
    }
    false
}

fn walk_value(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let inside = contains(&item.span(), offset);
                path.push(format!("\u{0}{i}"));
                if walk_value(item.get_ref(), offset, path) || inside {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(text, text.rfind('=').unwrap()), (2, 4));
    }

    #[test]
    fn finds_the_key_path_of_an_offset() {
        let text = "[pools.text.models.m]\nidle = \"5x\"\n[policy]\npolicies = [{ kind = \"noop\" }, { low = 2 }]\n";
        let table = DeTable::parse(text).unwrap();
        let at = text.find("5x").unwrap();
        assert_eq!(path_at(table.get_ref(), at), "pools.text.models.m.idle");
        let at = text.find("low").unwrap();
        assert_eq!(path_at(table.get_ref(), at), "policy.policies[1].low");
    }
}
