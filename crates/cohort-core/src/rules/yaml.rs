//! A small YAML tree with a position on every node, built from
//! yaml-rust2's event parser, and the mapping from a byte offset inside a
//! scalar's value back to a line and column of the file.
//!
//! Anchors, aliases, tags and multiple documents are rejected: a rules file
//! is read by people in reviews, and those features hide what a rule says.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the file: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    /// Character index from the start of the file.
    pub index: usize,
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(m: Marker) -> Pos {
        Pos { index: m.index(), line: m.line(), column: m.col() + 1 }
    }
}

/// A scalar with its style and position.
#[derive(Clone, Debug)]
pub struct Scalar {
    pub value: String,
    pub quoted: bool,
    pub pos: Pos,
}

/// A node of the tree.
#[derive(Clone, Debug)]
pub enum Node {
    Scalar(Scalar),
    Map(Vec<(Scalar, Node)>, Pos),
    Seq(Vec<Node>, Pos),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar(s) => s.pos,
            Node::Map(_, p) | Node::Seq(_, p) => *p,
        }
    }

    /// "a mapping", "a list" or "`value`", for "expected X, found Y".
    pub fn describe(&self) -> String {
        match self {
            Node::Scalar(s) if s.value.is_empty() && !s.quoted => "nothing".to_string(),
            Node::Scalar(s) => format!("`{}`", s.value),
            Node::Map(..) => "a mapping".to_string(),
            Node::Seq(..) => "a list".to_string(),
        }
    }
}

/// A YAML syntax error or a rejected feature.
#[derive(Clone, Debug)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Map(Vec<(Scalar, Node)>, Pos, Option<Scalar>),
    Seq(Vec<Node>, Pos),
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    error: Option<YamlError>,
    /// The text, to keep positions inside it.
    locator: Locator,
}

impl Builder {
    fn new(text: &str) -> Builder {
        Builder { stack: Vec::new(), root: None, documents: 0, error: None, locator: Locator::new(text) }
    }

    /// The position of a parser mark. At the end of the input (the end of
    /// the text, or a NUL, which the scanner reads as the end) the scanner
    /// has already stepped onto a line after the last one: the position is
    /// that end in the text instead.
    fn pos(&self, m: Marker) -> Pos {
        let pos = Pos::of(m);
        let chars = &self.locator.chars;
        if pos.index < chars.len() && chars[pos.index] != '\0' {
            return pos;
        }
        let index = pos.index.min(chars.len());
        let (line, column) = self.locator.line_col(index);
        Pos { index, line, column }
    }

    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message: message.to_string() });
        }
    }

    fn push_node(&mut self, node: Node) {
        let pos = node.pos();
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, _, key)) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => match node {
                    Node::Scalar(s) => *key = Some(s),
                    _ => self.fail(pos, "mapping keys must be plain words"),
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = self.pos(mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(pos, "a rules file holds one YAML document; found a second `---`");
                }
            }
            Event::Alias(_) => self.fail(pos, "YAML aliases (`*name`) are not supported in rules files"),
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    self.fail(pos, "YAML anchors (`&name`) and tags (`!tag`) are not supported in rules files");
                    return;
                }
                let quoted = matches!(style, TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted);
                self.push_node(Node::Scalar(Scalar { value, quoted, pos }));
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) if anchor != 0 || tag.is_some() => {
                self.fail(pos, "YAML anchors (`&name`) and tags (`!tag`) are not supported in rules files");
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new(), pos)),
            Event::MappingStart(..) => self.stack.push(Frame::Map(Vec::new(), pos, None)),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, p)) => self.push_node(Node::Seq(items, p)),
                Some(Frame::Map(entries, p, _)) => {
                    // A block mapping's start mark falls after its first key;
                    // people expect "the mapping" to be where its first key is.
                    let p = entries.first().map_or(p, |(k, _)| k.pos);
                    self.push_node(Node::Map(entries, p))
                }
                None => self.fail(pos, "unbalanced YAML structure"),
            },
        }
    }
}

/// Parse a whole file into a tree.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::new(text);
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(YamlError { pos: builder.pos(*e.marker()), message: e.info().to_string() });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    builder.root.ok_or(YamlError { pos: Pos { index: 0, line: 1, column: 1 }, message: "the file is empty".into() })
}

/// Maps positions inside scalar values back to the file.
pub struct Locator {
    chars: Vec<char>,
    line_starts: Vec<usize>,
}

impl Locator {
    pub fn new(text: &str) -> Locator {
        let chars: Vec<char> = text.chars().collect();
        let mut line_starts = vec![0];
        for (i, c) in chars.iter().enumerate() {
            if *c == '\n' {
                line_starts.push(i + 1);
            }
        }
        Locator { chars, line_starts }
    }

    fn line_col(&self, index: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= index).max(1);
        (line, index - self.line_starts[line - 1] + 1)
    }

    /// The file position of byte `offset` of `scalar.value`. Walks the raw
    /// text from the scalar's start, matching the value's non-blank
    /// characters in order, so quotes, folded lines and indentation are
    /// skipped; falls back to counting characters on the first line.
    pub fn locate(&self, scalar: &Scalar, offset: usize) -> (usize, usize) {
        let mut src = scalar.pos.index;
        let mut last: Option<(usize, usize)> = None; // (value byte offset, source char index)
        for (vi, vc) in scalar.value.char_indices() {
            if vi > offset {
                break;
            }
            if vc.is_whitespace() {
                continue;
            }
            let found = (src..self.chars.len()).find(|&k| self.chars[k] == vc);
            let Some(k) = found else { break };
            last = Some((vi, k));
            src = k + 1;
            if vi == offset {
                return self.line_col(k);
            }
        }
        match last {
            Some((vi, k)) => {
                let (line, col) = self.line_col(k);
                let extra = scalar.value.get(vi..offset).map_or(0, |s| s.chars().count());
                (line, col + extra)
            }
            None => {
                let extra = scalar.value.get(..offset).map_or(0, |s| s.chars().count());
                (scalar.pos.line, scalar.pos.column + usize::from(scalar.quoted) + extra)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_value(node: &Node, key: &str) -> Scalar {
        let Node::Map(entries, _) = node else { panic!("not a map") };
        match entries.iter().find(|(k, _)| k.value == key) {
            Some((_, Node::Scalar(s))) => s.clone(),
            _ => panic!("no {key}"),
        }
    }

    #[test]
    fn positions_of_plain_quoted_and_folded_scalars() {
        let text = "a: x > 1 && y\nb: \"q && r\"\nc: >-\n  one &&\n  two\n";
        let root = parse(text).unwrap();
        let loc = Locator::new(text);
        let a = first_value(&root, "a");
        assert_eq!((a.pos.line, a.pos.column), (1, 4));
        assert_eq!(loc.locate(&a, 0), (1, 4));
        assert_eq!(loc.locate(&a, 9), (1, 13));
        assert_eq!(loc.locate(&a, 10), (1, 14));
        let b = first_value(&root, "b");
        assert_eq!(loc.locate(&b, 5), (2, 10));
        let c = first_value(&root, "c");
        assert_eq!(c.value, "one && two");
        assert_eq!(loc.locate(&c, 7), (5, 3));
    }

    #[test]
    fn rejects_what_it_does_not_support() {
        assert!(parse("a: &x 1\nb: *x\n").unwrap_err().message.contains("anchors"));
        assert!(parse("a: 1\n---\nb: 2\n").unwrap_err().message.contains("one YAML document"));
        assert!(parse("a: !!str 1\n").unwrap_err().message.contains("tags"));
        assert_eq!(parse("").unwrap_err().message, "the file is empty");
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }

    #[test]
    fn an_error_at_the_end_of_the_text_is_inside_it() {
        // Found by the rules_parse fuzz target: the scanner reported line 3
        // of this two-line text.
        let e = parse(":\ne").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (2, 2), "{e:?}");
        let e = parse("a: [1, 2").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (1, 9), "{e:?}");
        // A NUL ends the input for the scanner: the error is at the NUL.
        let e = parse("[\0").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (1, 2), "{e:?}");
        // Not only the scanner's errors: the builder's, at a node's mark.
        let e = parse("!").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (1, 2), "{e:?}");
        // With a final newline the end is the empty last line, as before.
        let e = parse(":\ne\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (3, 1), "{e:?}");
    }
}
