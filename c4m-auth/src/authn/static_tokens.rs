//! [`StaticTokens`]: Kubernetes' token file (`--token-auth-file`), one user
//! per CSV record: `token,user,uid,"group1,group2"`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::authn::{AuthenticationError, Authenticator};
use crate::user::UserInfo;

/// A token file that cannot be used.
#[derive(Debug, Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read token file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is wrong (the cause says where).
    #[error("token file {}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, at which line and column.
        #[source]
        source: Box<TokenFileError>,
    },
    /// Not CSV.
    #[error("line {line}, column {column}: {problem}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// A record without token, user name and uid.
    #[error(
        "line {line}: a record needs at least 3 columns (token, user name, user uid), found {found}"
    )]
    Columns {
        /// 1-based line.
        line: usize,
        /// How many columns it has.
        found: usize,
    },
    /// An empty token or user name.
    #[error("line {line}, column {column}: the {field} is empty")]
    Empty {
        /// 1-based line.
        line: usize,
        /// 1-based column of the field.
        column: usize,
        /// `token` or `user name`.
        field: &'static str,
    },
    /// The same token twice: which user it means would depend on order.
    #[error("line {line}: the token of line {first_line} again")]
    Duplicate {
        /// 1-based line of the second occurrence.
        line: usize,
        /// 1-based line of the first.
        first_line: usize,
    },
}

/// Users by bearer token, from a token file or a Secret holding one.
///
/// Tokens are kept as SHA-256 digests and a presented token is compared
/// with every one in constant time, so neither timing nor a memory dump
/// tells a token. A lookup costs one digest and a comparison per user
/// (token files hold tens of users).
#[derive(Clone, Default)]
pub struct StaticTokens {
    users: Vec<([u8; 32], UserInfo)>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|(_, u)| u.name.as_str()).collect();
        f.debug_struct("StaticTokens")
            .field("users", &names)
            .finish()
    }
}

/// One CSV record: its line, and each field with its column.
struct Record {
    line: usize,
    fields: Vec<(usize, String)>,
}

impl StaticTokens {
    /// Reads the token file at `path`.
    ///
    /// # Errors
    /// The file cannot be read, or [`Self::parse`] refuses it (the error
    /// names the file, then the line and column).
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| TokenFileError::InFile {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Reads a token file's content: CSV records of `token,user,uid` and
    /// optionally a fourth column of comma-separated groups (quoted, since
    /// it holds commas); further columns are ignored, blank lines skipped.
    /// Fields may be quoted (`""` is a quote inside one) and leading spaces
    /// are dropped, as Go's CSV reader does for Kubernetes.
    ///
    /// # Errors
    /// Malformed CSV, a record of fewer than 3 columns, an empty token or
    /// user name, or a token given twice, naming the line (and column).
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut users: Vec<([u8; 32], UserInfo)> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for record in records(&text.replace("\r\n", "\n"))? {
            let line = record.line;
            let [
                (token_column, token),
                (name_column, name),
                (_, uid),
                rest @ ..,
            ] = record.fields.as_slice()
            else {
                return Err(TokenFileError::Columns {
                    line,
                    found: record.fields.len(),
                });
            };
            for (column, value, field) in [
                (token_column, token, "token"),
                (name_column, name, "user name"),
            ] {
                if value.is_empty() {
                    return Err(TokenFileError::Empty {
                        line,
                        column: *column,
                        field,
                    });
                }
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(at) = users.iter().position(|(known, _)| *known == digest) {
                return Err(TokenFileError::Duplicate {
                    line,
                    first_line: lines[at],
                });
            }
            let groups = rest.first().map_or_else(Vec::new, |(_, groups)| {
                groups
                    .split(',')
                    .map(str::trim)
                    .filter(|group| !group.is_empty())
                    .map(str::to_owned)
                    .collect()
            });
            let user = UserInfo {
                name: name.clone(),
                uid: uid.clone(),
                groups,
                ..UserInfo::default()
            };
            users.push((digest, user));
            lines.push(line);
        }
        Ok(Self { users })
    }

    /// How many users the file names.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file names no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, bearer: &str) -> Result<Option<UserInfo>, AuthenticationError> {
        let presented: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        let mut found = None;
        // Every entry is compared in full, whichever matches.
        for (digest, user) in &self.users {
            let difference = digest
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if black_box(difference) == 0 {
                found = Some(user);
            }
        }
        Ok(found.cloned())
    }
}

/// Reads characters, counting lines and columns (1-based).
struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    /// Column of the last character read (0 before the first of a line).
    column: usize,
}

impl Reader<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 0;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(&self, column: usize, problem: &'static str) -> TokenFileError {
        TokenFileError::Syntax {
            line: self.line,
            column,
            problem,
        }
    }
}

/// The CSV records of `text` (`\n` line ends), blank lines skipped.
fn records(text: &str) -> Result<Vec<Record>, TokenFileError> {
    let mut reader = Reader {
        chars: text.chars().peekable(),
        line: 1,
        column: 0,
    };
    let mut records = Vec::new();
    loop {
        // Skip blank lines (whitespace only).
        while matches!(reader.peek(), Some(' ' | '\t' | '\n')) {
            reader.next();
        }
        if reader.peek().is_none() {
            return Ok(records);
        }
        let mut record = Record {
            line: reader.line,
            fields: Vec::new(),
        };
        loop {
            while matches!(reader.peek(), Some(' ' | '\t')) {
                reader.next();
            }
            let column = reader.column + 1;
            let field = if reader.peek() == Some('"') {
                reader.next();
                quoted_field(&mut reader, column)?
            } else {
                let mut field = String::new();
                while let Some(c) = reader.peek() {
                    match c {
                        ',' | '\n' => break,
                        '"' => {
                            return Err(
                                reader.error(reader.column + 1, "bare \" in a non-quoted field")
                            );
                        }
                        c => {
                            reader.next();
                            field.push(c);
                        }
                    }
                }
                field
            };
            record.fields.push((column, field));
            match reader.next() {
                Some(',') => continue,
                _ => break,
            }
        }
        records.push(record);
    }
}

/// The rest of a quoted field opened at `column`, up to and without its
/// closing quote; `""` is a quote.
fn quoted_field(reader: &mut Reader<'_>, column: usize) -> Result<String, TokenFileError> {
    let (line, mut field) = (reader.line, String::new());
    loop {
        match reader.next() {
            None => {
                return Err(TokenFileError::Syntax {
                    line,
                    column,
                    problem: "quoted field is not closed",
                });
            }
            Some('"') => match reader.peek() {
                Some('"') => {
                    reader.next();
                    field.push('"');
                }
                None | Some(',' | '\n') => return Ok(field),
                Some(_) => {
                    return Err(reader.error(reader.column + 1, "extraneous \" in a quoted field"));
                }
            },
            Some(c) => field.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_are_read_from_records() {
        let tokens = StaticTokens::parse(concat!(
            "s3cr3t,alice,u-1,\"dev,ops\"\n",
            "\n",
            "  other-token , bob,u-2\r\n",
            "\"quoted,token\",\"carol \"\"cc\"\"\",u-3,single,ignored\n",
            "t4,dave,u-4,\" a, ,b \"",
        ))
        .unwrap();
        assert_eq!(tokens.len(), 4);
        let user = |token| tokens.authenticate(token).unwrap();
        let alice = user("s3cr3t").unwrap();
        assert_eq!((alice.name.as_str(), alice.uid.as_str()), ("alice", "u-1"));
        assert_eq!(alice.groups, ["dev", "ops"]);
        // Leading spaces go, trailing ones stay (Go's TrimLeadingSpace).
        assert_eq!(user("other-token ").unwrap().name, "bob");
        assert_eq!(user("other-token ").unwrap().groups, Vec::<String>::new());
        let carol = user("quoted,token").unwrap();
        assert_eq!(carol.name, "carol \"cc\"");
        assert_eq!(carol.groups, ["single"]);
        assert_eq!(user("t4").unwrap().groups, ["a", "b"]);
        for unknown in ["", "s3cr3", "s3cr3t ", "S3CR3T", "other-token"] {
            assert_eq!(user(unknown), None, "{unknown:?}");
        }
        assert!(StaticTokens::parse("\n  \n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let cases = [
            (
                "a,b,c\nx,y\n",
                "line 2: a record needs at least 3 columns (token, user name, user uid), found 2",
            ),
            (
                "a,b,c\n\n\ntok,us\"er,u\n",
                "line 4, column 7: bare \" in a non-quoted field",
            ),
            (
                "a,b,c\n\"tok\"x,user,u\n",
                "line 2, column 6: extraneous \" in a quoted field",
            ),
            (
                "a,b,c\ntok,user,\"u\n",
                "line 2, column 10: quoted field is not closed",
            ),
            (",user,u\n", "line 1, column 1: the token is empty"),
            ("tok,  ,u\n", "line 1, column 7: the user name is empty"),
            ("a,b,c\nd,e,f\na,g,h\n", "line 3: the token of line 1 again"),
        ];
        for (text, want) in cases {
            let error = StaticTokens::parse(text).unwrap_err();
            assert_eq!(error.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn a_quoted_field_may_span_lines() {
        let tokens = StaticTokens::parse("tok,\"multi\nline\",u\nnext,user,u2\n").unwrap();
        assert_eq!(
            tokens.authenticate("tok").unwrap().unwrap().name,
            "multi\nline"
        );
        let error = StaticTokens::parse("tok,\"multi\nline\",u\nbad\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 3: a record needs at least 3 columns (token, user name, user uid), found 1"
        );
    }

    #[test]
    fn files_are_read_and_their_errors_name_them() {
        let dir = std::env::temp_dir().join(format!("c4m-auth-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.csv");
        std::fs::write(&good, "tok,alice,u-1,\"a,b\"\n").unwrap();
        let tokens = StaticTokens::load(&good).unwrap();
        assert_eq!(
            tokens.authenticate("tok").unwrap().unwrap().groups,
            ["a", "b"]
        );
        assert_eq!(
            format!("{tokens:?}"),
            r#"StaticTokens { users: ["alice"] }"#
        );

        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "tok,alice\n").unwrap();
        let error = StaticTokens::load(&bad).unwrap_err();
        assert_eq!(error.to_string(), format!("token file {}", bad.display()));
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "line 1: a record needs at least 3 columns (token, user name, user uid), found 2"
        );
        let missing = dir.join("missing.csv");
        let error = StaticTokens::load(&missing).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot read token file {}", missing.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
