//! Recursive-descent parser for Calico selectors.
//!
//! ```text
//! selector := <empty> | or
//! or       := and ('||' and)*
//! and      := unary ('&&' unary)*
//! unary    := '!' unary | primary
//! primary  := '(' or ')' | 'all' '(' ')' | 'global' '(' ')' | 'has' '(' key ')'
//!           | key ('==' | '!=' | 'contains' | 'starts' 'with' | 'ends' 'with') string
//!           | key ('in' | 'not' 'in') '{' (string (',' string)*)? '}'
//! ```
//! As in Calico, the two-word operators may also be written as one word (`startswith`,
//! `endswith`, `notin`); the canonical form spells them as two. Keywords are recognised by
//! position, so a label may be called `in` or `has`. Each `(`
//! and each `!` is one level of nesting, checked before recursing, so hostile input fails
//! with an error and never overflows the stack.

use super::ast::Expr;
use super::lexer::{Lexer, Token, TokenKind};
use super::{MAX_DEPTH, MAX_LENGTH, ParseError};

/// Parses `text`; an empty or all-whitespace selector is `all()`.
///
/// # Errors
///
/// A [`ParseError`] (message and character position) when `text` is not a valid selector:
/// longer than [`MAX_LENGTH`] bytes, an unexpected character or unterminated string, a
/// label key longer than [`MAX_KEY_LENGTH`](super::MAX_KEY_LENGTH) characters, nesting
/// deeper than [`MAX_DEPTH`] levels, or tokens the grammar above does not accept.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > MAX_LENGTH {
        // The position is the first character that does not fit within the limit.
        let fits = text.floor_char_boundary(MAX_LENGTH);
        return Err(ParseError::new(
            format!(
                "selector is {} bytes long; the limit is {MAX_LENGTH}",
                text.len()
            ),
            text[..fits].chars().count(),
        ));
    }
    parse_unbounded(text)
}

/// Parses without the length check: only the depth limit guards the recursion. Used by
/// tests to show that the depth limit alone keeps huge inputs off the stack.
pub(crate) fn parse_unbounded(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        lexer: Lexer::new(text),
        peeked: None,
        depth: 0,
    };
    if parser.peek()?.kind == TokenKind::End {
        return Ok(Expr::All);
    }
    let expr = parser.or()?;
    let next = parser.peek()?;
    if next.kind != TokenKind::End {
        return Err(ParseError::at(
            "unexpected input after the end of the selector",
            next.pos,
        ));
    }
    Ok(expr)
}

struct Parser {
    lexer: Lexer,
    peeked: Option<Token>,
    depth: usize,
}

impl Parser {
    fn peek(&mut self) -> Result<&Token, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn bump(&mut self) -> Result<Token, ParseError> {
        self.peek()?;
        Ok(self.peeked.take().expect("just peeked"))
    }

    /// Consumes the next token if it is `kind`.
    fn eat(&mut self, kind: &TokenKind) -> Result<bool, ParseError> {
        let matched = self.peek()?.kind == *kind;
        if matched {
            self.peeked = None;
        }
        Ok(matched)
    }

    fn expect(&mut self, kind: &TokenKind, what: &str) -> Result<(), ParseError> {
        let token = self.bump()?;
        if token.kind == *kind {
            Ok(())
        } else {
            Err(ParseError::at(format!("expected {what}"), token.pos))
        }
    }

    /// Consumes the next token if it is the word `keyword`.
    fn eat_keyword(&mut self, keyword: &str) -> Result<bool, ParseError> {
        let matched = matches!(&self.peek()?.kind, TokenKind::Word(word) if word == keyword);
        if matched {
            self.peeked = None;
        }
        Ok(matched)
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::at(
                format!("selector nests deeper than {MAX_DEPTH} levels"),
                pos,
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.and()?];
        while self.eat(&TokenKind::OrOr)? {
            operands.push(self.and()?);
        }
        Ok(Expr::or(operands))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.unary()?];
        while self.eat(&TokenKind::AndAnd)? {
            operands.push(self.unary()?);
        }
        Ok(Expr::and(operands))
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let token = self.peek()?;
        if token.kind != TokenKind::Bang {
            return self.primary();
        }
        let pos = token.pos;
        self.peeked = None;
        self.enter(pos)?;
        let operand = self.unary()?;
        self.depth -= 1;
        Ok(Expr::negate(operand))
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let token = self.bump()?;
        match token.kind {
            TokenKind::LParen => {
                self.enter(token.pos)?;
                let inner = self.or()?;
                self.expect(&TokenKind::RParen, "')'")?;
                self.depth -= 1;
                Ok(inner)
            }
            TokenKind::Word(word) => {
                if self.peek()?.kind == TokenKind::LParen {
                    match word.as_str() {
                        "all" | "global" => {
                            self.peeked = None;
                            self.expect(&TokenKind::RParen, "')'")?;
                            return Ok(if word == "all" {
                                Expr::All
                            } else {
                                Expr::Global
                            });
                        }
                        "has" => {
                            self.peeked = None;
                            let key = self.key()?;
                            self.expect(&TokenKind::RParen, "')'")?;
                            return Ok(Expr::Has(key));
                        }
                        _ => {}
                    }
                }
                self.comparison(word)
            }
            _ => Err(ParseError::at("expected a label key", token.pos)),
        }
    }

    fn key(&mut self) -> Result<String, ParseError> {
        let token = self.bump()?;
        match token.kind {
            TokenKind::Word(word) => Ok(word),
            _ => Err(ParseError::at("expected a label key", token.pos)),
        }
    }

    fn comparison(&mut self, key: String) -> Result<Expr, ParseError> {
        let token = self.bump()?;
        let keyword = match &token.kind {
            TokenKind::EqEq => return Ok(Expr::Eq(key, self.string()?)),
            TokenKind::NotEq => return Ok(Expr::Ne(key, self.string()?)),
            TokenKind::Word(word) => word.as_str(),
            _ => "",
        };
        match keyword {
            "in" => Ok(Expr::in_set(key, self.set()?)),
            "notin" => Ok(Expr::not_in_set(key, self.set()?)),
            "startswith" => Ok(Expr::StartsWith(key, self.string()?)),
            "endswith" => Ok(Expr::EndsWith(key, self.string()?)),
            "not" => {
                let next = self.peek()?.pos;
                if !self.eat_keyword("in")? {
                    return Err(ParseError::at("expected 'in' after 'not'", next));
                }
                Ok(Expr::not_in_set(key, self.set()?))
            }
            "contains" => Ok(Expr::Contains(key, self.string()?)),
            "starts" | "ends" => {
                let next = self.peek()?.pos;
                if !self.eat_keyword("with")? {
                    return Err(ParseError::at(
                        format!("expected 'with' after '{keyword}'"),
                        next,
                    ));
                }
                let value = self.string()?;
                Ok(if keyword == "starts" {
                    Expr::StartsWith(key, value)
                } else {
                    Expr::EndsWith(key, value)
                })
            }
            _ => Err(ParseError::at(
                "expected an operator (==, !=, in, not in, contains, starts with, ends with)",
                token.pos,
            )),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let token = self.bump()?;
        match token.kind {
            TokenKind::Str(value) => Ok(value),
            _ => Err(ParseError::at("expected a quoted string", token.pos)),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(&TokenKind::LBrace, "'{'")?;
        let mut values = Vec::new();
        if self.eat(&TokenKind::RBrace)? {
            return Ok(values);
        }
        loop {
            values.push(self.string()?);
            let token = self.bump()?;
            match token.kind {
                TokenKind::Comma => {}
                TokenKind::RBrace => return Ok(values),
                _ => return Err(ParseError::at("expected ',' or '}'", token.pos)),
            }
        }
    }
}
