//! Splits selector text into tokens, one at a time, tracking character positions.

use super::{MAX_KEY_LENGTH, ParseError};

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    /// `!` on its own (negation).
    Bang,
    /// `==`
    EqEq,
    /// `!=`
    NotEq,
    /// `&&`
    AndAnd,
    /// `||`
    OrOr,
    /// A quoted string, without its quotes.
    Str(String),
    /// A run of label-key characters: a key, or a keyword such as `in`, `has`, `all`.
    Word(String),
    /// The end of the text.
    End,
}

/// A token and the 0-based character position where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub pos: usize,
}

/// The characters a label key (and a keyword) is made of: `[A-Za-z0-9_./-]`.
pub(crate) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

pub(crate) struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    pub(crate) fn new(text: &str) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    fn peek_char(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// The next token; whitespace between tokens is skipped.
    pub(crate) fn next_token(&mut self) -> Result<Token, ParseError> {
        while self.peek_char(0).is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.peek_char(0) else {
            return Ok(Token {
                kind: TokenKind::End,
                pos: start,
            });
        };
        let single = |kind| Some((kind, 1));
        let double = |second, kind| (self.peek_char(1) == Some(second)).then_some((kind, 2));
        let simple = match c {
            '(' => single(TokenKind::LParen),
            ')' => single(TokenKind::RParen),
            '{' => single(TokenKind::LBrace),
            '}' => single(TokenKind::RBrace),
            ',' => single(TokenKind::Comma),
            '!' => double('=', TokenKind::NotEq).or(single(TokenKind::Bang)),
            '=' => Some(
                double('=', TokenKind::EqEq)
                    .ok_or_else(|| ParseError::at("expected '=='", start))?,
            ),
            '&' => Some(
                double('&', TokenKind::AndAnd)
                    .ok_or_else(|| ParseError::at("expected '&&'", start))?,
            ),
            '|' => Some(
                double('|', TokenKind::OrOr)
                    .ok_or_else(|| ParseError::at("expected '||'", start))?,
            ),
            _ => None,
        };
        if let Some((kind, width)) = simple {
            self.pos += width;
            return Ok(Token { kind, pos: start });
        }
        if c == '\'' || c == '"' {
            return self.string(c, start);
        }
        if is_key_char(c) {
            return self.word(start);
        }
        Err(ParseError::at(format!("unexpected character {c:?}"), start))
    }

    /// A string runs to the next matching quote; there are no escapes.
    fn string(&mut self, quote: char, start: usize) -> Result<Token, ParseError> {
        let body = start + 1;
        let Some(length) = self.chars[body..].iter().position(|&c| c == quote) else {
            return Err(ParseError::at("unterminated string starting", start));
        };
        self.pos = body + length + 1;
        let value = self.chars[body..body + length].iter().collect();
        Ok(Token {
            kind: TokenKind::Str(value),
            pos: start,
        })
    }

    fn word(&mut self, start: usize) -> Result<Token, ParseError> {
        let length = self.chars[start..]
            .iter()
            .take_while(|&&c| is_key_char(c))
            .count();
        if length > MAX_KEY_LENGTH {
            return Err(ParseError::new(
                format!(
                    "label key at position {start} is {length} characters long; the limit is {MAX_KEY_LENGTH}"
                ),
                start,
            ));
        }
        self.pos = start + length;
        let word = self.chars[start..self.pos].iter().collect();
        Ok(Token {
            kind: TokenKind::Word(word),
            pos: start,
        })
    }
}
