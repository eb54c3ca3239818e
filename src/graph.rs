//! The service dependency DAG: levels for parallel start, and cycles named for errors.

use std::collections::{BTreeMap, BTreeSet};

/// Group nodes into levels (docs/design.md §4). Returns the cycle, as a path that
/// starts and ends at the same node, when there is one. Edges to unknown nodes are ignored
/// (validation reports them separately).
pub fn levels<'a>(
    nodes: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>,
) -> Result<Vec<Vec<String>>, Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = nodes.into_iter().collect();
    if let Some(cycle) = find_cycle(&deps) {
        return Err(cycle);
    }
    let mut level_of: BTreeMap<&str, usize> = BTreeMap::new();
    fn depth<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        memo: &mut BTreeMap<&'a str, usize>,
    ) -> usize {
        if let Some(d) = memo.get(n) {
            return *d;
        }
        let d = deps
            .get(n)
            .map(|ds| {
                ds.iter()
                    .filter(|d| deps.contains_key(*d))
                    .map(|d| depth(d, deps, memo) + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        memo.insert(n, d);
        d
    }
    for n in deps.keys() {
        depth(n, &deps, &mut level_of);
    }
    let max = level_of.values().copied().max().map(|m| m + 1).unwrap_or(0);
    let mut out = vec![Vec::new(); max];
    for (n, l) in level_of {
        out[l].push(n.to_string());
    }
    Ok(out)
}

fn find_cycle(deps: &BTreeMap<&str, Vec<&str>>) -> Option<Vec<String>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in deps.keys() {
        let mut path: Vec<&str> = Vec::new();
        if let Some(c) = visit(start, deps, &mut path, &mut done) {
            return Some(c);
        }
    }
    None
}

fn visit<'a>(
    n: &'a str,
    deps: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(pos) = path.iter().position(|p| *p == n) {
        let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
        cycle.push(n.to_string());
        return Some(cycle);
    }
    if done.contains(n) {
        return None;
    }
    path.push(n);
    for d in deps.get(n).into_iter().flatten() {
        if deps.contains_key(d)
            && let Some(c) = visit(d, deps, path, done)
        {
            return Some(c);
        }
    }
    path.pop();
    done.insert(n);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_tier_stack_has_three_levels() {
        let l = levels([
            ("app", vec!["cache"]),
            ("cache", vec!["db"]),
            ("db", vec![]),
        ])
        .unwrap();
        assert_eq!(l, vec![vec!["db"], vec!["cache"], vec!["app"]]);
    }

    #[test]
    fn independent_services_share_a_level() {
        let l = levels([("a", vec![]), ("b", vec![]), ("c", vec!["a", "b"])]).unwrap();
        assert_eq!(l, vec![vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn cycle_is_named_as_a_path() {
        let err = levels([("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]).unwrap_err();
        assert_eq!(err, vec!["a", "b", "c", "a"]);
    }
}
