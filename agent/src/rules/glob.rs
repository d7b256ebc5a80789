//! Falco's `glob` operator: fnmatch(3) without flags, so `*` also matches
//! `/`. Patterns are checked once when a rule compiles; matching allocates
//! nothing.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
    case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    Any,
    Star,
    /// `[...]`: ranges of bytes, negated with `!` or `^`.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Glob {
    pub(crate) fn new(pattern: &str, case_insensitive: bool) -> Glob {
        let p = pattern.as_bytes();
        let fold = |b: u8| {
            if case_insensitive {
                b.to_ascii_lowercase()
            } else {
                b
            }
        };
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                b'\\' if i + 1 < p.len() => {
                    tokens.push(Token::Byte(fold(p[i + 1])));
                    i += 2;
                }
                b'[' => match parse_class(&p[i..], fold) {
                    Some((tok, used)) => {
                        tokens.push(tok);
                        i += used;
                    }
                    None => {
                        tokens.push(Token::Byte(b'['));
                        i += 1;
                    }
                },
                b => {
                    tokens.push(Token::Byte(fold(b)));
                    i += 1;
                }
            }
        }
        Glob {
            tokens,
            case_insensitive,
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let t = text.as_bytes();
        let fold = |b: u8| {
            if self.case_insensitive {
                b.to_ascii_lowercase()
            } else {
                b
            }
        };
        // Iterative matcher with one backtrack point (the last star): linear
        // in practice, never exponential.
        let (mut ti, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            let ok = match self.tokens.get(pi) {
                Some(Token::Star) => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                Some(Token::Any) => true,
                Some(Token::Byte(b)) => *b == fold(t[ti]),
                Some(Token::Class { negated, ranges }) => {
                    let c = fold(t[ti]);
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
                }
                None => false,
            };
            if ok {
                ti += 1;
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        self.tokens[pi..].iter().all(|t| *t == Token::Star)
    }
}

fn parse_class(p: &[u8], fold: impl Fn(u8) -> u8) -> Option<(Token, usize)> {
    let mut i = 1;
    let negated = matches!(p.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < p.len() {
        let c = p[i];
        if c == b']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            ranges.push((fold(c), fold(p[i + 2])));
            i += 3;
        } else {
            ranges.push((fold(c), fold(c)));
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_cross_slashes_like_fnmatch_without_flags() {
        let g = Glob::new("/home/*/.ssh/*", false);
        assert!(g.matches("/home/ann/.ssh/id_rsa"));
        assert!(g.matches("/home/a/b/.ssh/x"));
        assert!(!g.matches("/root/.ssh/id_rsa"));
        assert!(Glob::new("*../*../*", false).matches("/var/www/../../etc/passwd"));
        assert!(!Glob::new("*../*../*", false).matches("/var/www/../etc"));
    }

    #[test]
    fn classes_question_marks_and_case_folding() {
        let g = Glob::new("/dev/tty[0-9]?", false);
        assert!(g.matches("/dev/tty1a"));
        assert!(!g.matches("/dev/ttyS1"));
        assert!(Glob::new("[!a]*", false).matches("bcd"));
        assert!(!Glob::new("[!a]*", false).matches("abc"));
        assert!(Glob::new("*.SO", true).matches("libx.so"));
        assert!(Glob::new("", false).matches(""));
        assert!(!Glob::new("", false).matches("x"));
        assert!(Glob::new("a\\*", false).matches("a*"));
    }
}
