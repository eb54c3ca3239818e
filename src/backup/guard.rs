//! A backup file is data, never code (docs/design.md §12): the line scan every dump
//! passes before psql reads a byte of it, and again while psql reads it.
//!
//! psql runs a backslash command wherever its lexer is outside a string, a quoted
//! identifier, a dollar-quoted body or a comment, not only at the start of a line
//! (`SELECT 1; \! id` runs `id`), and `COPY … TO PROGRAM` runs a command on the server.
//! So the scan is a copy of psql's own lexer (`src/fe_utils/psqlscan.l`) where it
//! decides what is SQL text: strings (`'…'`, `E'…'`), quoted identifiers, `$tag$`
//! bodies, nested `/* */` and `--` comments, the statement-ending `;` with psql's
//! parenthesis and `CREATE FUNCTION … BEGIN` counting, and `COPY … FROM stdin;` data,
//! which psql passes to the server up to a line that is exactly `\.`. Inside that data a
//! leading backslash is data.
//!
//! Refused, with the line:
//! - any backslash where psql's lexer reads SQL: a meta-command (`\!`, `\o |cmd`,
//!   `\copy`, `\connect`, `\i`, `\gexec` …); pg_dump's own `\restrict KEY` /
//!   `\unrestrict KEY` lines are the one exception, and they never reach psql (see
//!   [`Verdict::Restrict`]);
//! - a `COPY` that is not pg_dump's `COPY name (columns) FROM stdin;` on one line (so
//!   `COPY … TO PROGRAM`, `FROM PROGRAM`, to or from a server file), and `COPY … TO` or
//!   `FROM PROGRAM` anywhere else: in a string, a function body;
//! - what would make psql read the rest differently from this scan: a change of
//!   `standard_conforming_strings` or of the client encoding other than pg_dump's own
//!   `SET` lines, a backslash in a string before `SET standard_conforming_strings = on;`,
//!   a reference to one of psql's own variables (`:DBNAME`, `:'USER'`: psql would put
//!   their text there, unescaped), and a NUL byte (psql's line reading stops at one).
//!
//! Where psql is new enough (13.22, 14.19, 15.14, 16.10, 17.6, 18 and later), the restore
//! also starts psql's input with `\restrict` and a key of its own, so psql itself refuses
//! any backslash command the scan might have missed.

/// What to do with a line that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SQL or COPY data: psql reads it.
    Pass,
    /// pg_dump's own `\restrict KEY` or `\unrestrict KEY` line (pg_dump 13.22, 14.19,
    /// 15.14, 16.10, 17.6 and later write them around the dump): left out of what psql
    /// reads. The restore restricts psql with a key of its own where psql knows how;
    /// an older psql would stop at a command it does not know.
    Restrict,
}

/// Where psql's lexer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// SQL text: where a backslash is a command and `;` ends a statement.
    Normal,
    /// A string literal; `escapes` for `E'…'`, where a backslash escapes the next byte.
    Quote { escapes: bool },
    /// A quoted identifier.
    Ident,
    /// A dollar-quoted body, up to its tag (kept in [`Guard::tag`]).
    Dollar,
    /// A block comment, nested this deep beyond the first.
    Block(u32),
}

/// The word before the one being read, as far as `COPY … TO PROGRAM` and `SET NAMES`
/// care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prev {
    None,
    ToOrFrom,
    Set,
    Other,
}

/// The scan's state across the lines of one dump.
#[derive(Debug)]
pub struct Guard {
    lex: Lex,
    /// The open dollar-quote's delimiter, `$` and tag and `$`.
    tag: Vec<u8>,
    /// Inside `COPY … FROM stdin;` data, up to a line `\.`.
    copy_data: bool,
    /// psql's counters: a `;` inside parentheses, or inside the `BEGIN … END` of a
    /// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, does not end the statement.
    paren: u32,
    begin: u32,
    idents: [u8; 4],
    ident_count: usize,
    /// A token of the statement psql is collecting was seen.
    started: bool,
    /// The next token starts a statement as the server parses it (after any `;`).
    server_start: bool,
    /// The statement began with `COPY` on this line, at this byte.
    copy_at: Option<usize>,
    /// The word `COPY` was seen in this statement (anywhere: in a string, a body).
    copy_seen: bool,
    prev: Prev,
    /// `SET standard_conforming_strings = on;` was seen: a backslash in a plain string
    /// is a character from then on.
    standard_strings: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            lex: Lex::Normal,
            tag: Vec::new(),
            copy_data: false,
            paren: 0,
            begin: 0,
            idents: [0; 4],
            ident_count: 0,
            started: false,
            server_start: true,
            copy_at: None,
            copy_seen: false,
            prev: Prev::None,
            standard_strings: false,
        }
    }
}

/// The server encodings (`pg_encoding_to_char` spelling, as pg_dump writes them): in
/// each of them every byte of a multi-byte character is above 0x7f, so psql's lexer
/// reads quotes and backslashes as this scan does. The client-only encodings (SJIS,
/// BIG5, GBK, UHC, GB18030, JOHAB) have a backslash byte inside characters.
const SERVER_ENCODINGS: &[&str] = &[
    "SQL_ASCII",
    "UTF8",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
];

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// A character of a word for the text checks (identifiers without `$`).
fn word_char(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit()
}

fn blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|c| c.is_ascii_whitespace() || *c == 0x0b)
}

/// The length of a dollar-quote delimiter (`$$`, `$tag$`) starting at `at`, if one does.
fn dollar_delimiter(line: &[u8], at: usize) -> Option<usize> {
    let rest = &line[at + 1..];
    if rest.first() == Some(&b'$') {
        return Some(2);
    }
    if !rest.first().is_some_and(|&c| ident_start(c)) {
        return None;
    }
    let tag = rest.iter().take_while(|&&c| word_char(c)).count();
    (rest.get(tag) == Some(&b'$')).then_some(tag + 2)
}

/// The backslash command at the start of `text`, for a message: `\!`, `\o`, `\copy`.
fn command_name(text: &[u8]) -> String {
    let name: Vec<u8> = text
        .iter()
        .skip(1)
        .take_while(|c| !c.is_ascii_whitespace() && **c != b'\\')
        .take(16)
        .copied()
        .collect();
    let name = String::from_utf8_lossy(&name);
    let name = name
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
        .collect::<String>();
    format!("\\{name}")
}

/// Whether `stmt` (from `COPY` to its `;`) is pg_dump's `COPY name (columns) FROM
/// stdin;`.
fn is_dump_copy(stmt: &[u8]) -> bool {
    let mut p = Parser { s: stmt, at: 0 };
    if !p.keyword("copy") || !p.space() {
        return false;
    }
    // name(.name)*
    loop {
        if !p.name() {
            return false;
        }
        if !p.punct(b'.') {
            break;
        }
    }
    p.space();
    if p.punct(b'(') {
        loop {
            p.space();
            if !p.name() {
                return false;
            }
            p.space();
            if p.punct(b')') {
                break;
            }
            if !p.punct(b',') {
                return false;
            }
        }
        p.space();
    }
    p.keyword("from") && p.space() && p.keyword("stdin") && {
        p.space();
        p.punct(b';') && p.at == stmt.len()
    }
}

/// Just enough of a parser for [`is_dump_copy`].
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) -> bool {
        let n = self.s[self.at..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
        self.at += n;
        n > 0
    }

    fn punct(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.at) == Some(&c);
        self.at += usize::from(hit);
        hit
    }

    fn keyword(&mut self, word: &str) -> bool {
        let end = self.at + word.len();
        let hit = self
            .s
            .get(self.at..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()))
            && !self.s.get(end).is_some_and(|&c| ident_cont(c));
        if hit {
            self.at = end;
        }
        hit
    }

    /// A bare or a `"quoted"` identifier.
    fn name(&mut self) -> bool {
        let rest = &self.s[self.at..];
        match rest.first() {
            Some(b'"') => {
                let mut i = 1;
                while i < rest.len() {
                    if rest[i] == b'"' {
                        if rest.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        self.at += i + 1;
                        return i > 1;
                    }
                    i += 1;
                }
                false
            }
            Some(&c) if ident_start(c) => {
                self.at += rest.iter().take_while(|&&c| ident_cont(c)).count();
                true
            }
            _ => false,
        }
    }
}

impl Guard {
    /// One line of the dump, with its newline (the last may lack one). `Err(why)`: psql
    /// would run a command, or could read the rest otherwise than this scan does.
    pub fn line(&mut self, line: &[u8]) -> Result<Verdict, String> {
        if line.contains(&0) {
            return Err("a NUL byte (psql stops reading a line at one)".into());
        }
        if self.copy_data {
            if matches!(line, b"\\.\n" | b"\\.\r\n" | b"\\.") {
                self.copy_data = false;
            }
            return Ok(Verdict::Pass);
        }
        if self.lex == Lex::Normal
            && !self.started
            && let Some(verdict) = self.whole_line(line)?
        {
            return Ok(verdict);
        }
        self.scan(line)?;
        if self.copy_at.take().is_some() {
            return Err(
                "a COPY statement that does not end on its line (pg_dump writes `COPY name (columns) FROM stdin;` on one)".into(),
            );
        }
        Ok(Verdict::Pass)
    }

    /// The lines pg_dump writes that the byte scan would refuse or misread, each whole
    /// and between statements.
    fn whole_line(&mut self, line: &[u8]) -> Result<Option<Verdict>, String> {
        let text = line.trim_ascii();
        for command in [&b"\\restrict "[..], b"\\unrestrict "] {
            if let Some(key) = text.strip_prefix(command)
                && !key.is_empty()
                && key.iter().all(u8::is_ascii_alphanumeric)
            {
                return Ok(Some(Verdict::Restrict));
            }
        }
        if text == b"SET standard_conforming_strings = on;" {
            self.standard_strings = true;
            return Ok(Some(Verdict::Pass));
        }
        if let Some(encoding) = text
            .strip_prefix(b"SET client_encoding = '")
            .and_then(|t| t.strip_suffix(b"';"))
        {
            let encoding = String::from_utf8_lossy(encoding);
            if SERVER_ENCODINGS.contains(&encoding.as_ref()) {
                return Ok(Some(Verdict::Pass));
            }
            return Err(format!(
                "client encoding {encoding:?}: not a server encoding, psql would read its bytes otherwise"
            ));
        }
        Ok(None)
    }

    fn scan(&mut self, line: &[u8]) -> Result<(), String> {
        let n = line.len();
        let mut i = 0;
        while i < n {
            let c = line[i];
            let next = line.get(i + 1).copied();
            match self.lex {
                Lex::Block(depth) => {
                    if c == b'/' && next == Some(b'*') {
                        self.lex = Lex::Block(depth + 1);
                        i += 2;
                    } else if c == b'*' && next == Some(b'/') {
                        self.lex = match depth {
                            0 => Lex::Normal,
                            d => Lex::Block(d - 1),
                        };
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                Lex::Quote { escapes } => match c {
                    // The escape takes the next byte, whatever it is (a quote, a newline).
                    b'\\' if escapes => i += 2,
                    b'\\' if !self.standard_strings => {
                        return Err(
                            "a backslash in a string before `SET standard_conforming_strings = on;` (psql could read it as an escape)".into(),
                        );
                    }
                    b'\'' if next == Some(b'\'') => i += 2,
                    b'\'' => {
                        self.lex = Lex::Normal;
                        i += 1;
                    }
                    c if word_char(c) => i = self.text_word(line, i, true)?,
                    _ => i += 1,
                },
                Lex::Ident => match c {
                    b'"' if next == Some(b'"') => i += 2,
                    b'"' => {
                        self.lex = Lex::Normal;
                        i += 1;
                    }
                    c if word_char(c) => i = self.text_word(line, i, true)?,
                    _ => i += 1,
                },
                Lex::Dollar => {
                    if line[i..].starts_with(&self.tag) {
                        self.lex = Lex::Normal;
                        i += self.tag.len();
                    } else if word_char(c) {
                        i = self.text_word(line, i, false)?;
                    } else {
                        i += 1;
                    }
                }
                Lex::Normal => i = self.normal(line, i)?,
            }
        }
        Ok(())
    }

    /// One token of SQL text at `i`; where the next one starts.
    fn normal(&mut self, line: &[u8], i: usize) -> Result<usize, String> {
        let c = line[i];
        let next = line.get(i + 1).copied();
        if c.is_ascii_whitespace() || c == 0x0b {
            return Ok(i + 1);
        }
        if c == b'-' && next == Some(b'-') {
            return Ok(line.len());
        }
        if c == b'/' && next == Some(b'*') {
            self.lex = Lex::Block(0);
            return Ok(i + 2);
        }
        if c == b';' {
            return self.semicolon(line, i);
        }
        let first = !self.started;
        let server_first = std::mem::replace(&mut self.server_start, false);
        self.started = true;
        match c {
            b'\\' => {
                let command = command_name(&line[i..]);
                Err(match command.as_str() {
                    "\\." => "the end-of-data marker `\\.` outside COPY data".into(),
                    "\\c" | "\\connect" => format!(
                        "psql command `{command}`: a dump that switches databases (berth restores into one of its own)"
                    ),
                    _ => format!("psql command `{command}`: psql would run it"),
                })
            }
            b'\'' => {
                self.lex = Lex::Quote { escapes: false };
                Ok(i + 1)
            }
            b'"' => {
                self.lex = Lex::Ident;
                Ok(i + 1)
            }
            b'$' => match dollar_delimiter(line, i) {
                Some(len) => {
                    self.tag = line[i..i + len].to_vec();
                    self.lex = Lex::Dollar;
                    Ok(i + len)
                }
                // A parameter (`$1`) or a lone `$`.
                None => Ok(i + 1),
            },
            b':' => self.colon(line, i),
            b'(' => {
                self.paren += 1;
                Ok(i + 1)
            }
            b')' => {
                self.paren = self.paren.saturating_sub(1);
                Ok(i + 1)
            }
            c if c.is_ascii_digit() => {
                // A number never holds `$` (`1$a$` is 1 then a dollar quote).
                let mut end = i + line[i..]
                    .iter()
                    .take_while(|&&c| c.is_ascii_digit() || c == b'.')
                    .count();
                // An exponent: `1e5`, `2.5E-3`.
                if matches!(line.get(end), Some(b'e' | b'E')) {
                    let sign = usize::from(matches!(line.get(end + 1), Some(b'+' | b'-')));
                    let digits = line[(end + 1 + sign).min(line.len())..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                    if digits > 0 {
                        end += 1 + sign + digits;
                    }
                }
                Ok(end)
            }
            c if ident_start(c) => {
                let len = line[i..].iter().take_while(|&&c| ident_cont(c)).count();
                let end = i + len;
                let word = &line[i..end];
                // `E'…'`: a string where a backslash escapes.
                if len == 1 && word.eq_ignore_ascii_case(b"e") && line.get(end) == Some(&b'\'') {
                    self.lex = Lex::Quote { escapes: true };
                    return Ok(end + 1);
                }
                self.identifier(word, i, first, server_first)?;
                Ok(end)
            }
            _ => Ok(i + 1),
        }
    }

    /// An identifier (or keyword) in SQL text.
    fn identifier(
        &mut self,
        word: &[u8],
        at: usize,
        first: bool,
        server_first: bool,
    ) -> Result<(), String> {
        // psql's heuristic for `CREATE [OR REPLACE] FUNCTION|PROCEDURE … BEGIN ATOMIC …
        // END`, as psqlscan.l has it: semicolons inside do not end the statement.
        if self.ident_count == 0 {
            self.idents = [0; 4];
        }
        let lower = word.to_ascii_lowercase();
        if matches!(
            lower.as_slice(),
            b"create" | b"function" | b"procedure" | b"or" | b"replace"
        ) && self.ident_count < self.idents.len()
        {
            self.idents[self.ident_count] = lower[0];
        }
        self.ident_count += 1;
        let id = self.idents;
        if id[0] == b'c'
            && (id[1] == b'f'
                || id[1] == b'p'
                || (id[1] == b'o' && id[2] == b'r' && (id[3] == b'f' || id[3] == b'p')))
            && self.paren == 0
        {
            match lower.as_slice() {
                b"begin" => self.begin += 1,
                b"case" if self.begin >= 1 => self.begin += 1,
                b"end" => self.begin = self.begin.saturating_sub(1),
                _ => {}
            }
        }
        if lower == b"copy" && server_first {
            if !first {
                return Err(
                    "a COPY inside a statement psql sends whole (after a `;` in parentheses or a function body)".into(),
                );
            }
            self.copy_at = Some(at);
        }
        self.word(&lower, true)
    }

    /// A word inside a string, a quoted identifier or a body, for the text checks;
    /// where it ends. `settings`: also check for setting changes (not in bodies, which
    /// run only when called).
    fn text_word(&mut self, line: &[u8], i: usize, settings: bool) -> Result<usize, String> {
        let len = line[i..].iter().take_while(|&&c| word_char(c)).count();
        self.word(&line[i..i + len].to_ascii_lowercase(), settings)?;
        Ok(i + len)
    }

    /// The checks on words wherever they are: `COPY … TO/FROM PROGRAM`, and what would
    /// change how psql reads the rest.
    fn word(&mut self, lower: &[u8], settings: bool) -> Result<(), String> {
        let prev = std::mem::replace(
            &mut self.prev,
            match lower {
                b"to" | b"from" => Prev::ToOrFrom,
                b"set" => Prev::Set,
                _ => Prev::Other,
            },
        );
        match lower {
            b"copy" => self.copy_seen = true,
            // pg_dump's own COPY is checked whole, at its `;` (a column may be "to").
            b"program" if self.copy_seen && prev == Prev::ToOrFrom && self.copy_at.is_none() => {
                return Err(
                    "COPY … TO/FROM PROGRAM: a command the database server would run".into(),
                );
            }
            b"standard_conforming_strings" if settings => {
                return Err(
                    "a change of standard_conforming_strings (pg_dump writes only `SET standard_conforming_strings = on;`): psql would read the strings after it otherwise".into(),
                );
            }
            b"client_encoding" if settings => {
                return Err(
                    "a change of the client encoding other than pg_dump's `SET client_encoding = '…';`: psql would read the bytes after it otherwise".into(),
                );
            }
            b"names" if settings && prev == Prev::Set => {
                return Err("SET NAMES: a change of the client encoding".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// A `:` in SQL text: a typecast, `:=`, or a psql variable reference.
    fn colon(&mut self, line: &[u8], i: usize) -> Result<usize, String> {
        let rest = &line[i + 1..];
        match rest.first() {
            Some(b':') | Some(b'=') => return Ok(i + 2),
            _ => {}
        }
        let (open, name_at) = match rest.first() {
            Some(&q @ (b'\'' | b'"')) => (Some(q), 1),
            _ => (None, 0),
        };
        let name: &[u8] = &rest[name_at..];
        let len = name.iter().take_while(|&&c| word_char(c)).count();
        let name = &name[..len];
        let closed = match open {
            Some(q) => rest.get(name_at + len) == Some(&q),
            None => true,
        };
        // psql's own variables (DBNAME, USER, HOST, VERSION …) are upper case, and only
        // they are set when it restores; an SQL identifier is folded to lower case.
        if len > 0 && closed && name.iter().any(u8::is_ascii_uppercase) {
            return Err(format!(
                "a psql variable reference `:{}`: psql would put its own text there",
                String::from_utf8_lossy(name)
            ));
        }
        Ok(i + 1)
    }

    /// A `;` in SQL text: the end of a statement, as psql splits them.
    fn semicolon(&mut self, line: &[u8], i: usize) -> Result<usize, String> {
        self.server_start = true;
        self.copy_seen = false;
        self.prev = Prev::None;
        if self.paren > 0 || self.begin > 0 {
            return Ok(i + 1);
        }
        self.started = false;
        self.ident_count = 0;
        if let Some(at) = self.copy_at.take() {
            let stmt = &line[at..=i];
            if !is_dump_copy(stmt) {
                return Err(format!(
                    "`{}`: berth restores only pg_dump's `COPY name (columns) FROM stdin;` (COPY can run a program or read a server file)",
                    String::from_utf8_lossy(stmt)
                        .chars()
                        .take(120)
                        .collect::<String>()
                ));
            }
            if !blank(&line[i + 1..]) {
                return Err("text after `COPY … FROM stdin;` on its line".into());
            }
            self.copy_data = true;
            return Ok(line.len());
        }
        Ok(i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `text` through one guard: the first refusal as `LINE: why`, or the
    /// verdicts.
    fn run(text: &str) -> Result<Vec<Verdict>, String> {
        let mut g = Guard::default();
        let mut out = Vec::new();
        for (n, line) in text.split_inclusive('\n').enumerate() {
            out.push(
                g.line(line.as_bytes())
                    .map_err(|e| format!("{}: {e}", n + 1))?,
            );
        }
        Ok(out)
    }

    const HEAD: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict nBkQtaEuqx9hc\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n";

    #[test]
    fn what_pg_dump_writes_passes() {
        let dump = format!(
            "{HEAD}CREATE FUNCTION public.f() RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT 1;\nEND;\n\
             CREATE FUNCTION public.g() RETURNS trigger\n    LANGUAGE plpgsql\n    AS $_$\nBEGIN\n  RAISE NOTICE 'a\\b; \\! x';\n  RETURN NEW;\nEND $_$;\n\
             CREATE TABLE public.program (\n    id integer,\n    \"to\" text,\n    program text\n);\n\
             CREATE VIEW public.v AS\n SELECT (ARRAY[1, 2, 3])[1:2] AS s, 'x'::text AS t\n   FROM public.program;\n\
             COMMENT ON TABLE public.program IS 'it''s \\ /* not a comment';\n\
             /* a comment /* nested */ \\! still */\n\
             COPY public.program (id, \"to\", program) FROM stdin;\n1\tback\\\\slash\\n\\\\. x\t\\x00ff\n\\!\tdata\t\\N\n\\.\n\
             COPY public.\"Odd\"  FROM stdin;\n\\.\n\
             SELECT E'\\'; \\! x';\n\
             -- PostgreSQL database dump complete\n\n\\unrestrict nBkQtaEuqx9hc\n\n"
        );
        let verdicts = run(&dump).unwrap();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Restrict).count(),
            2
        );
    }

    #[test]
    fn a_psql_command_anywhere_psql_reads_sql_is_refused_at_its_line() {
        for (sql, why) in [
            ("\\! touch /tmp/x\n", "`\\!`"),
            ("SELECT 1; \\! touch /tmp/x\n", "`\\!`"),
            ("   \\o | sh\n", "`\\o`"),
            ("\\copy t to program 'x'\n", "`\\copy`"),
            ("\\connect other\n", "switches databases"),
            ("\\.\n", "outside COPY data"),
            ("SELECT 1 \\gexec\n", "`\\gexec`"),
            ("\\restrict k; \\! id\n", "`\\restrict`"),
            // A string that ends (the quote doubled, then closed) before the command.
            ("SELECT 'a'''; \\! id\n", "`\\!`"),
            // A body's delimiter that is not the one that opened it does not close it.
            ("SELECT $a$ $b$ $a$; \\! id\n", "`\\!`"),
            ("SELECT 1 /* a */ \\! id\n", "`\\!`"),
            // The data after a COPY that failed is SQL to psql: only pg_dump's form
            // opens data.
            ("COPY t FROM stdin WITH (FORMAT csv);\n", "pg_dump's"),
        ] {
            let text = format!("{HEAD}SELECT 0;\n{sql}");
            let e = run(&text).unwrap_err();
            assert!(
                e.contains(why) && e.starts_with(&format!("{}:", HEAD.lines().count() + 2)),
                "{sql:?}: {e}"
            );
        }
    }

    #[test]
    fn copy_to_or_from_a_program_is_refused_wherever_it_is() {
        for sql in [
            "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x';\n",
            "copy public.t from program 'id';\n",
            "COPY public.t FROM '/etc/passwd';\n",
            "COPY public.t TO STDOUT;\n",
            "COPY public.t FROM stdin; SELECT 1;\n",
            "COPY public.t\nFROM stdin;\n",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN COPY t TO PROGRAM 'id'; END $$;\n",
            "DO $$ BEGIN EXECUTE 'COPY t TO PROGRAM ''id'''; END $$;\n",
            "SELECT 'copy t from\n program';\n",
            "SELECT (1; COPY public.t FROM stdin);\n",
        ] {
            let e = run(&format!("{HEAD}{sql}")).unwrap_err();
            assert!(e.contains("COPY") || e.contains("PROGRAM"), "{sql:?}: {e}");
        }
        // A table or a column named program is not a program.
        run(&format!(
            "{HEAD}COPY public.program (id, \"from\", program) FROM stdin;\n\\.\nSELECT 1 FROM program;\n"
        ))
        .unwrap();
    }

    #[test]
    fn what_would_make_psql_read_the_rest_otherwise_is_refused() {
        for (sql, why) in [
            (
                "SET standard_conforming_strings = off;\n",
                "standard_conforming_strings",
            ),
            (
                "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);\n",
                "standard_conforming_strings",
            ),
            ("SET client_encoding = 'SJIS';\n", "SJIS"),
            ("SET NAMES 'BIG5';\n", "SET NAMES"),
            (
                "SELECT set_config('client_encoding', 'gbk', false);\n",
                "client encoding",
            ),
            ("SELECT :DBNAME;\n", ":DBNAME"),
            ("SELECT :'USER';\n", ":USER"),
            ("SELECT 1;\0\n", "NUL"),
        ] {
            let e = run(&format!("{HEAD}{sql}")).unwrap_err();
            assert!(e.contains(why), "{sql:?}: {e}");
        }
        // Before pg_dump's `SET standard_conforming_strings = on;` a backslash in a plain
        // string may be an escape to psql.
        let e = run("--\nSELECT 'a\\'; \\! id --';\n").unwrap_err();
        assert!(
            e.starts_with("2:") && e.contains("standard_conforming_strings"),
            "{e}"
        );
        // A lower-case name is no variable of psql's.
        run(&format!("{HEAD}SELECT (a)[1:n], x::text FROM t;\n")).unwrap();
    }

    #[test]
    fn copy_data_ends_only_at_a_line_that_is_exactly_the_marker() {
        let text = format!(
            "{HEAD}COPY public.t (a) FROM stdin;\n\\. \n x\\.\n\\.x\n\\! data\n\\.\r\n\\! id\n"
        );
        let e = run(&text).unwrap_err();
        assert!(
            e.starts_with(&format!("{}:", HEAD.lines().count() + 7)),
            "{e}"
        );
    }

    #[test]
    fn the_copy_form_is_pg_dumps() {
        for ok in [
            "COPY public.t (a, b) FROM stdin;",
            "COPY public.\"Odd \"\"x\"\" FROM\" (\"a b\") FROM stdin;",
            "copy t from STDIN;",
            "COPY public.t  FROM stdin;",
        ] {
            assert!(is_dump_copy(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "COPY public.t (a) FROM stdin WITH csv;",
            "COPY public.t (a) TO stdout;",
            "COPY (SELECT 1) TO PROGRAM 'x';",
            "COPY public.t FROM PROGRAM 'x';",
            "COPY public.t FROM stdin",
            "COPY public.t () FROM stdin;",
            "COPYpublic.t FROM stdin;",
        ] {
            assert!(!is_dump_copy(bad.as_bytes()), "{bad}");
        }
    }
}
