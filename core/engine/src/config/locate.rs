//! Where in a pipeline file a field is: the line a parse error's value starts on, and the
//! line of a field path found by validation (`events.com.shop.OrderPlaced[1].when`).
//! Good enough to point a reader at the right place; never an error of its own.

/// The key whose value starts at `line`:`column` (1-based): the last `key:` before that
/// column on the line (inside a flow mapping, `{ url: "${X}" }`), else the line's own key,
/// else that of the nearest line above (a block scalar's text).
pub(super) fn key_at(text: &str, line: u64, column: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    let here = lines.get(index)?;
    let before: String = here
        .chars()
        .take(usize::try_from(column.saturating_sub(1)).ok()?)
        .collect();
    let before = before.trim_end();
    if let Some(head) = before.strip_suffix(':') {
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(*c == '_' || *c == '-' || *c == '.' || c.is_alphanumeric()))
            // Past that character, however many bytes it takes (`größe: …`).
            .map_or(0, |(p, c)| p + c.len_utf8());
        if start < head.len() {
            return Some(head[start..].to_owned());
        }
    }
    (0..=index)
        .rev()
        .find_map(|i| key_on_line(text, i as u64 + 1))
}

fn key_on_line(text: &str, line: u64) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)? as usize)?;
    let (key, _) = l.trim().split_once(':')?;
    Some(key.trim().to_owned())
}

/// The line of a field path (dotted keys, `[i]` for the i-th list item), walking the path
/// from the top so each key is looked for below its parent. Event type names contain
/// dots, so the longest run of segments that is a key wins. `None` when not even the
/// first key is found; else the line of the deepest key found.
pub(crate) fn line_of_field(text: &str, field: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let segments = segments(field);
    let (mut from, mut found, mut i) = (0, None, 0);
    while i < segments.len() {
        if let Ok(n) = segments[i].parse::<usize>() {
            let Some(l) = nth_item(&lines, from, n) else {
                break;
            };
            (from, found, i) = (l, Some(l), i + 1);
            continue;
        }
        let hit = (i + 1..=segments.len()).rev().find_map(|j| {
            if segments[i..j].iter().any(|s| s.parse::<usize>().is_ok()) {
                return None;
            }
            let key = segments[i..j].join(".");
            (from..lines.len())
                .find(|&l| has_key(lines[l], &key))
                .map(|l| (l, j))
        });
        let Some((l, j)) = hit else {
            break;
        };
        (from, found, i) = (l, Some(l), j);
    }
    found.map(|l| l as u64 + 1)
}

/// `a.b[1].c` as `["a", "b", "1", "c"]`.
fn segments(field: &str) -> Vec<&str> {
    field
        .split('.')
        .flat_map(|s| s.split(['[', ']']))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `line` holds `key` as a mapping key: at its start (after list dashes), or
/// after `{` or `,` in a flow mapping; bare or quoted.
fn has_key(line: &str, key: &str) -> bool {
    [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ]
    .iter()
    .any(|needle| {
        line.match_indices(needle.as_str()).any(|(at, _)| {
            let before = line[..at].trim_end();
            before.is_empty() || before.ends_with(['{', ',', '-'])
        })
    })
}

/// The line of the `n`-th item of the block list that starts below `from`.
fn nth_item(lines: &[&str], from: usize, n: usize) -> Option<usize> {
    let is_item = |l: &str| l.trim_start().starts_with("- ") || l.trim() == "-";
    let indent = |l: &str| l.len() - l.trim_start().len();
    let first = (from..lines.len()).find(|&l| is_item(lines[l]))?;
    let depth = indent(lines[first]);
    let mut count = 0;
    for (l, line) in lines.iter().enumerate().skip(first) {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) < depth || (indent(line) == depth && !is_item(line)) {
            return None;
        }
        if indent(line) == depth {
            if count == n {
                return Some(l);
            }
            count += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
key:
  columns: [id]
events:
  com.shop.OrderPlaced:
    op: upsert
    columns: {n: \"items.size()\", key: x}
  com.shop.OrderClosed:
    - when: \"a\"
      op: delete

    - when: \"b\"
      op: merge
      columns:
        status: \"'X'\"
";

    #[test]
    fn walks_the_path_through_dotted_keys_and_list_items() {
        assert_eq!(line_of_field(TEXT, "key.columns"), Some(2));
        assert_eq!(
            line_of_field(TEXT, "events.com.shop.OrderPlaced.op"),
            Some(5)
        );
        assert_eq!(
            line_of_field(TEXT, "events.com.shop.OrderPlaced.columns.n"),
            Some(6)
        );
        assert_eq!(
            line_of_field(TEXT, "events.com.shop.OrderClosed[0].when"),
            Some(8)
        );
        assert_eq!(
            line_of_field(TEXT, "events.com.shop.OrderClosed[1].when"),
            Some(11)
        );
        assert_eq!(
            line_of_field(TEXT, "events.com.shop.OrderClosed[1].columns.status"),
            Some(14)
        );
        // A key not found: the deepest parent found.
        assert_eq!(key_at("a:\n  größe: [x]\n", 2, 10), Some("größe".into()));
        assert_eq!(
            line_of_field(TEXT, "events.com.shop.OrderPlaced.types.n"),
            Some(4)
        );
        assert_eq!(line_of_field(TEXT, "nothing"), None);
    }
}
