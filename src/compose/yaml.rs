//! YAML as a tree of nodes that keep where they were written (file, line, column), from
//! `saphyr-parser`'s events: the report and every error name `FILE:LINE:COL` of the
//! Compose key at fault. Anchors and aliases are resolved (an alias is a copy of its
//! anchor's node, at the alias's place), and so are YAML 1.1 merge keys (`<<: *base`,
//! `<<: [*a, *b]`): the mapping's own keys win, then the merged ones in order. Only the
//! first document of a stream is read. A duplicate key is an error, as in Compose.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::Diagnostic;

/// Where a node was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<PathBuf>,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
}

impl Pos {
    /// `FILE:LINE:COL`.
    pub fn at(&self) -> String {
        format!("{}:{}:{}", self.file.display(), self.line, self.col)
    }

    pub fn diag(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.as_ref().clone(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
    /// A local tag (`!reset`, `!override`), without its `!`.
    pub tag: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Null,
    /// A scalar's text. `raw` is the text as written when interpolation changed it.
    Scalar {
        text: String,
        raw: Option<String>,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// In the order written (merged keys after the mapping's own).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A scalar's text (a number or boolean as written); None for anything else.
    pub fn str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A scalar as written, before interpolation.
    pub fn raw(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, raw, .. } => Some(raw.as_deref().unwrap_or(text)),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    pub fn seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// A mapping's entries by their key's text.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node, &Node)> {
        self.map()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (k.str().unwrap_or_default(), k, v))
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| v)
    }

    /// The key node of `key` in a mapping (for its position).
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entries()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| k)
    }

    /// What kind of node this is, for messages.
    pub fn what(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Parse `text` (the contents of `file`) into its first document's root; an empty file
/// is a null root.
pub fn parse(file: &Path, text: &str) -> Result<Node, Diagnostic> {
    let file = Arc::new(file.to_path_buf());
    let mut b = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: Default::default(),
        root: None,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| Diagnostic {
            file: file.as_ref().clone(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: format!("invalid YAML: {}", e.info()),
        })?;
        if b.event(event, span)? {
            break;
        }
    }
    Ok(b.root.unwrap_or(Node {
        kind: Kind::Null,
        pos: Pos {
            file,
            line: 1,
            col: 1,
        },
        tag: None,
    }))
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        key: Option<Node>,
        /// The `<<` values, merged once the mapping ends.
        merges: Vec<Node>,
    },
}

struct Builder {
    file: Arc<PathBuf>,
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn pos(&self, span: Span) -> Pos {
        Pos {
            file: self.file.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    /// Take one event; true once the first document ended.
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<bool, Diagnostic> {
        let pos = self.pos(span);
        match event {
            Event::DocumentEnd => return Ok(self.root.is_some()),
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let kind =
                    if !quoted && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                        Kind::Null
                    } else {
                        Kind::Scalar {
                            text: text.into_owned(),
                            raw: None,
                            quoted,
                        }
                    };
                let node = Node {
                    kind,
                    pos,
                    tag: tag.map(|t| t.suffix.to_string()),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::Alias(id) => {
                let Some(mut node) = self.anchors.get(&id).cloned() else {
                    return Err(pos.diag("invalid YAML: an alias of an unknown anchor"));
                };
                node.pos = pos;
                self.push(node)?;
            }
            Event::SequenceStart(anchor, tag) => self.stack.push(Frame::Seq {
                node: Node {
                    kind: Kind::Seq(Vec::new()),
                    pos,
                    tag: tag.map(|t| t.suffix.to_string()),
                },
                anchor,
            }),
            Event::MappingStart(anchor, tag) => self.stack.push(Frame::Map {
                node: Node {
                    kind: Kind::Map(Vec::new()),
                    pos,
                    tag: tag.map(|t| t.suffix.to_string()),
                },
                anchor,
                key: None,
                merges: Vec::new(),
            }),
            Event::SequenceEnd => {
                let Some(Frame::Seq { node, anchor }) = self.stack.pop() else {
                    return Err(pos.diag("invalid YAML: unbalanced sequence"));
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::MappingEnd => {
                let Some(Frame::Map {
                    mut node,
                    anchor,
                    merges,
                    ..
                }) = self.stack.pop()
                else {
                    return Err(pos.diag("invalid YAML: unbalanced mapping"));
                };
                merge_keys(&mut node, merges)?;
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            _ => {}
        }
        Ok(false)
    }

    /// A finished node goes into its parent (as a key, or a key's value), or is the root.
    fn push(&mut self, node: Node) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { node: parent, .. }) => {
                if let Kind::Seq(items) = &mut parent.kind {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: parent,
                key,
                merges,
                ..
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) if k.str() == Some("<<") && !is_quoted(&k) => merges.push(node),
                Some(k) => {
                    let Kind::Map(entries) = &mut parent.kind else {
                        unreachable!("a map frame holds a map")
                    };
                    if let Some(name) = k.str()
                        && entries.iter().any(|(e, _)| e.str() == Some(name))
                    {
                        return Err(k.pos.diag(format!(
                            "duplicate key {name:?} (YAML allows a key once per mapping)"
                        )));
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }
}

fn is_quoted(n: &Node) -> bool {
    matches!(n.kind, Kind::Scalar { quoted: true, .. })
}

/// Apply a mapping's `<<` values: a mapping, or a list of them; a key the mapping has
/// itself, or an earlier merged mapping gave, is kept.
fn merge_keys(node: &mut Node, merges: Vec<Node>) -> Result<(), Diagnostic> {
    let Kind::Map(entries) = &mut node.kind else {
        return Ok(());
    };
    for m in merges {
        let sources: Vec<Node> = match m.kind {
            Kind::Map(_) => vec![m],
            Kind::Seq(items) => items,
            _ => {
                return Err(m.pos.diag(format!(
                    "a merge key `<<` takes a mapping or a list of mappings, not {}",
                    m.what()
                )));
            }
        };
        for s in sources {
            let Kind::Map(more) = s.kind else {
                return Err(s
                    .pos
                    .diag(format!("a merge key `<<` takes mappings, not {}", s.what())));
            };
            for (k, v) in more {
                if !entries.iter().any(|(e, _)| e.str() == k.str()) {
                    entries.push((k, v));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Node, Diagnostic> {
        parse(Path::new("c.yml"), text)
    }

    #[test]
    fn nodes_keep_their_line_and_column() {
        let root = parse_str("services:\n  db:\n    image: postgres:15\n").unwrap();
        let db = root.get("services").unwrap().get("db").unwrap();
        let image = db.get("image").unwrap();
        assert_eq!(image.str(), Some("postgres:15"));
        assert_eq!((image.pos.line, image.pos.col), (3, 12));
        let key = db.key("image").unwrap();
        assert_eq!(key.pos.at(), "c.yml:3:5");
    }

    #[test]
    fn anchors_aliases_and_merge_keys_are_resolved() {
        let text = "x-base: &base\n  restart: always\n  environment: {A: '1'}\nservices:\n  a:\n    <<: *base\n    restart: 'no'\n  b:\n    <<: [*base]\n    image: b\n";
        let root = parse_str(text).unwrap();
        let a = root.get("services").unwrap().get("a").unwrap();
        assert_eq!(a.get("restart").unwrap().str(), Some("no"), "own key wins");
        assert!(a.get("environment").is_some());
        assert!(a.get("<<").is_none());
        let b = root.get("services").unwrap().get("b").unwrap();
        assert_eq!(b.get("restart").unwrap().str(), Some("always"));
    }

    #[test]
    fn nulls_and_tags() {
        let root = parse_str("a:\nb: ~\nc: ''\nd: !reset []\n").unwrap();
        assert!(root.get("a").unwrap().is_null());
        assert!(root.get("b").unwrap().is_null());
        assert_eq!(root.get("c").unwrap().str(), Some(""));
        assert_eq!(root.get("d").unwrap().tag.as_deref(), Some("reset"));
    }

    #[test]
    fn bad_yaml_is_located() {
        let e = parse_str("services:\n  db:\n    image: [a\n").unwrap_err();
        assert!(e.line >= 3, "{e}");
        assert!(e.message.starts_with("invalid YAML"), "{e}");
        let e = parse_str("services:\n\tdb:\n    image: a\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse_str("a: 1\na: 2\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 1), "{e}");
        assert!(e.message.contains("duplicate key"), "{e}");
    }
}
