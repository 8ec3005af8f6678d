//! Guards: the conjuncts of a CEL rule that can be checked without the CEL
//! interpreter.
//!
//! A custom rule is usually a conjunction whose first terms rarely hold
//! (`call.output_tokens > 8000 && ...`). Running the interpreter means
//! building a map of the call's fields and a context for every call, which
//! costs far more than the comparison itself. At compile time the top-level
//! `&&` terms that compare one `call` field with a literal are turned into
//! [`Guard`]s, checked natively first:
//!
//! - a guard that does not hold means the expression cannot yield `true`
//!   (`false && x` is `false` in CEL, whatever `x` is, errors included), so
//!   the interpreter is skipped;
//! - when every term is a guard and all hold, the expression is `true`;
//! - otherwise the interpreter decides.
//!
//! Only comparisons whose native meaning is exactly CEL's become guards:
//! integer fields against integer literals, `cost_usd` against double
//! literals (ordering only), string fields and labels against string
//! literals (`==`, `!=`, `startsWith`, `endsWith`, `contains`).

use cel::common::ast::operators;
use cel::common::ast::{CallExpr, Expr, LiteralValue};

use super::call_view::CallView;

/// An integer field of `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntField {
    Input,
    Output,
    CacheRead,
    Total,
}

/// What a guard reads.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Int(IntField),
    CostUsd,
    /// A string field, by name (one of `CallView`'s).
    Str(&'static str),
    /// `call.labels["name"]`: a call without the label fails the guard,
    /// as CEL fails with "no such key".
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    StartsWith,
    EndsWith,
    Contains,
}

impl Op {
    fn of_operator(name: &str) -> Option<Self> {
        Some(match name {
            operators::EQUALS => Op::Eq,
            operators::NOT_EQUALS => Op::Ne,
            operators::LESS => Op::Lt,
            operators::LESS_EQUALS => Op::Le,
            operators::GREATER => Op::Gt,
            operators::GREATER_EQUALS => Op::Ge,
            _ => return None,
        })
    }

    /// `a op b` written as `b op' a`.
    fn mirrored(self) -> Self {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }

    fn ordering_holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
            Op::StartsWith | Op::EndsWith | Op::Contains => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Int(i64),
    Double(f64),
    Str(String),
}

/// One natively checked term of a conjunction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Guard {
    field: Field,
    op: Op,
    value: Literal,
}

/// The string fields of `call`.
const STRING_FIELDS: [&str; 13] = [
    "model",
    "provider",
    "operation",
    "status",
    "error_type",
    "org",
    "project",
    "app",
    "environment",
    "user",
    "session",
    "route",
    "upstream",
];

/// `call.<name>` as a guard field.
fn field_of(expr: &Expr) -> Option<Field> {
    match expr {
        Expr::Select(s) if !s.test => {
            if !matches!(&s.operand.expr, Expr::Ident(root) if root == "call") {
                return None;
            }
            let name = s.field.as_str();
            Some(match name {
                "input_tokens" => Field::Int(IntField::Input),
                "output_tokens" => Field::Int(IntField::Output),
                "cache_read_tokens" => Field::Int(IntField::CacheRead),
                "total_tokens" => Field::Int(IntField::Total),
                "cost_usd" => Field::CostUsd,
                _ => Field::Str(STRING_FIELDS.iter().copied().find(|f| *f == name)?),
            })
        }
        Expr::Call(c) if c.func_name == operators::INDEX && c.target.is_none() => {
            let [map, key] = c.args.as_slice() else {
                return None;
            };
            let is_labels = matches!(
                &map.expr,
                Expr::Select(s) if !s.test
                    && s.field == "labels"
                    && matches!(&s.operand.expr, Expr::Ident(root) if root == "call")
            );
            match (&key.expr, is_labels) {
                (Expr::Literal(LiteralValue::String(name)), true) => {
                    Some(Field::Label(name.inner().to_owned()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn literal_of(expr: &Expr) -> Option<Literal> {
    match expr {
        Expr::Literal(LiteralValue::Int(i)) => Some(Literal::Int(*i.inner())),
        Expr::Literal(LiteralValue::Double(d)) => Some(Literal::Double(*d.inner())),
        Expr::Literal(LiteralValue::String(s)) => Some(Literal::Str(s.inner().to_owned())),
        _ => None,
    }
}

/// Keeps only the combinations whose native meaning is CEL's.
fn checked(field: Field, op: Op, value: Literal) -> Option<Guard> {
    let ordering = !matches!(op, Op::StartsWith | Op::EndsWith | Op::Contains);
    let ok = match (&field, &value) {
        (Field::Int(_), Literal::Int(_)) => ordering,
        // `!=` is left out: NaN answers it differently in Rust and CEL.
        (Field::CostUsd, Literal::Double(_)) => ordering && op != Op::Ne,
        (Field::Str(_) | Field::Label(_), Literal::Str(_)) => {
            matches!(
                op,
                Op::Eq | Op::Ne | Op::StartsWith | Op::EndsWith | Op::Contains
            )
        }
        _ => false,
    };
    ok.then_some(Guard { field, op, value })
}

fn guard_of_call(c: &CallExpr) -> Option<Guard> {
    if let Some(target) = &c.target {
        let op = match c.func_name.as_str() {
            "startsWith" => Op::StartsWith,
            "endsWith" => Op::EndsWith,
            "contains" => Op::Contains,
            _ => return None,
        };
        let [arg] = c.args.as_slice() else {
            return None;
        };
        return checked(field_of(&target.expr)?, op, literal_of(&arg.expr)?);
    }
    let op = Op::of_operator(&c.func_name)?;
    let [a, b] = c.args.as_slice() else {
        return None;
    };
    if let (Some(f), Some(v)) = (field_of(&a.expr), literal_of(&b.expr)) {
        return checked(f, op, v);
    }
    checked(field_of(&b.expr)?, op.mirrored(), literal_of(&a.expr)?)
}

/// The guards of `expr`, and whether they are the whole expression.
pub(crate) fn guards(expr: &Expr) -> (Vec<Guard>, bool) {
    let mut terms = Vec::new();
    conjuncts(expr, &mut terms);
    let mut out = Vec::new();
    let mut complete = true;
    for term in terms {
        match term {
            Expr::Call(c) => match guard_of_call(c) {
                Some(g) => out.push(g),
                None => complete = false,
            },
            _ => complete = false,
        }
    }
    (out, complete)
}

fn conjuncts<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::Call(c)
            if c.func_name == operators::LOGICAL_AND && c.target.is_none() && c.args.len() == 2 =>
        {
            for a in &c.args {
                conjuncts(&a.expr, out);
            }
        }
        other => out.push(other),
    }
}

impl Guard {
    /// Whether the term holds for `call`.
    pub(crate) fn holds(&self, call: &CallView<'_>) -> bool {
        match (&self.field, &self.value) {
            (Field::Int(f), Literal::Int(v)) => {
                let n = match f {
                    IntField::Input => call.input_tokens,
                    IntField::Output => call.output_tokens,
                    IntField::CacheRead => call.cache_read_tokens,
                    IntField::Total => call.total_tokens,
                };
                self.op.ordering_holds(n.cmp(v))
            }
            (Field::CostUsd, Literal::Double(v)) => call
                .cost_usd
                .partial_cmp(v)
                .is_some_and(|o| self.op.ordering_holds(o)),
            (Field::Str(name), Literal::Str(v)) => self.on_str(call.str_field(name), v),
            (Field::Label(name), Literal::Str(v)) => call
                .labels
                .get(name)
                .is_some_and(|s| self.on_str(Some(s), v)),
            _ => false,
        }
    }

    fn on_str(&self, s: Option<&str>, v: &str) -> bool {
        let Some(s) = s else { return false };
        match self.op {
            Op::Eq => s == v,
            Op::Ne => s != v,
            Op::StartsWith => s.starts_with(v),
            Op::EndsWith => s.ends_with(v),
            Op::Contains => s.contains(v),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => false,
        }
    }
}
