//! A check's CEL expression: parsed with the `cel` crate, then checked here against the facts
//! schema of its subject kind and bounded, because the crate has neither a type checker nor a
//! cost limit.
//!
//! Bounds, enforced when the policy is loaded: at most [`MAX_SOURCE_LEN`] characters,
//! [`MAX_NODES`] AST nodes, [`MAX_DEPTH`] levels of nesting, [`MAX_COMPREHENSIONS`]
//! comprehensions (`all`, `exists`, `exists_one`, `filter`, `map`) and none nested in another.
//! Fact lists hold at most [`MAX_FACT_LIST`](crate::facts::MAX_FACT_LIST) items and parameter
//! lists at most [`MAX_PARAM_LIST`](crate::policy::MAX_PARAM_LIST), and CEL has no recursion
//! or unbounded loops, so one evaluation visits at most about
//! `MAX_NODES × MAX_FACT_LIST` nodes: a runaway expression cannot be written, only a slow
//! one, and its slowness has that ceiling. The exception is the crate's `filter` and `map`,
//! which copy their growing result at each step (square of the list's length); docs/monitor.md
//! tells policy authors to keep them to short lists.

use std::collections::{BTreeMap, BTreeSet};

use cel::IdedExpr;
use cel::common::ast::{EntryExpr, Expr, LiteralValue};

use crate::facts::{FactType, Field, Source};

pub const MAX_SOURCE_LEN: usize = 2048;
pub const MAX_NODES: usize = 256;
pub const MAX_DEPTH: usize = 24;
pub const MAX_COMPREHENSIONS: usize = 4;

/// The functions and operators an expression may call; anything else is refused at load.
const FUNCTIONS: &[&str] = &[
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "-_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "min",
    "max",
    "int",
    "double",
    "string",
];

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("expression is {0} characters long, more than the limit of {MAX_SOURCE_LEN}")]
    TooLong(usize),
    #[error("expression does not parse: {0}")]
    Parse(String),
    #[error("expression has more than {MAX_NODES} nodes")]
    TooManyNodes,
    #[error("expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("expression has more than {MAX_COMPREHENSIONS} comprehensions")]
    TooManyComprehensions,
    #[error("a comprehension (all, exists, filter, map) inside another is not allowed")]
    NestedComprehension,
    #[error("unknown variable `{0}` (expressions read `facts`, `params` and `subject`)")]
    UnknownVariable(String),
    #[error("unknown {what} `{path}`")]
    UnknownField { what: &'static str, path: String },
    #[error("`{path}` is a {ty} and has no fields")]
    NotAnObject { path: String, ty: FactType },
    #[error("function `{0}` is not available")]
    UnknownFunction(String),
    #[error("{0} literals are not supported")]
    Unsupported(&'static str),
    #[error("expression yields {0}, not bool")]
    NotBool(FactType),
}

/// A parsed, checked expression, ready to evaluate.
#[derive(Debug)]
pub struct Expression {
    pub source: String,
    pub(crate) ast: IdedExpr,
    /// Top-level facts the expression reads; their sources decide skip and error results.
    pub facts_read: BTreeSet<String>,
}

/// What an expression may refer to.
pub struct Environment<'a> {
    pub facts: &'a BTreeMap<String, Field>,
    pub params: &'a BTreeMap<String, FactType>,
}

impl Environment<'_> {
    /// The fields of `subject`: who is being checked.
    pub fn subject_fields() -> BTreeMap<String, Field> {
        let field = |description: &str| Field {
            ty: FactType::String,
            source: Source::Cluster,
            description: description.to_string(),
        };
        BTreeMap::from([
            ("kind".to_string(), field("subject kind")),
            ("name".to_string(), field("subject name")),
            ("namespace".to_string(), field("namespace, empty if none")),
            (
                "municipality".to_string(),
                field("municipality evaluated for, empty for the platform"),
            ),
            ("profile".to_string(), field("Standard or Elevated")),
        ])
    }
}

/// Parses and checks a check's expression, which must yield a bool.
pub fn compile(source: &str, env: &Environment<'_>) -> Result<Expression, ExprError> {
    compile_with(source, env, true)
}

/// Parses and checks a message placeholder, which may yield any value.
pub fn compile_value(source: &str, env: &Environment<'_>) -> Result<Expression, ExprError> {
    compile_with(source, env, false)
}

fn compile_with(
    source: &str,
    env: &Environment<'_>,
    require_bool: bool,
) -> Result<Expression, ExprError> {
    if source.len() > MAX_SOURCE_LEN {
        return Err(ExprError::TooLong(source.len()));
    }
    let ast = cel::parser::Parser::new()
        // The parser's own recursion guard keeps deeply nested input from exhausting the stack
        // before the depth check below sees the tree.
        .max_recursion_depth(MAX_DEPTH as u16 * 2)
        .parse(source)
        .map_err(|errors| {
            ExprError::Parse(
                errors
                    .errors
                    .iter()
                    .map(|e| format!("column {}: {}", e.pos.1 + 1, e.msg))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
    let mut checker = Checker {
        env,
        subject: Environment::subject_fields(),
        locals: Vec::new(),
        nodes: 0,
        comprehensions: 0,
        facts_read: BTreeSet::new(),
    };
    let ty = checker.check(&ast, 0, 0)?;
    if require_bool && !matches!(ty, FactType::Bool | FactType::Dyn) {
        return Err(ExprError::NotBool(ty));
    }
    Ok(Expression {
        source: source.to_string(),
        ast,
        facts_read: checker.facts_read,
    })
}

struct Checker<'e, 'a> {
    env: &'e Environment<'a>,
    subject: BTreeMap<String, Field>,
    /// Comprehension variables in scope, innermost last.
    locals: Vec<(String, FactType)>,
    nodes: usize,
    comprehensions: usize,
    facts_read: BTreeSet<String>,
}

impl Checker<'_, '_> {
    fn check(
        &mut self,
        node: &IdedExpr,
        depth: usize,
        in_comprehension: usize,
    ) -> Result<FactType, ExprError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ExprError::TooManyNodes);
        }
        if depth > MAX_DEPTH {
            return Err(ExprError::TooDeep);
        }
        let next = depth + 1;
        match &node.expr {
            Expr::Unspecified => Ok(FactType::Dyn),
            Expr::Literal(literal) => Ok(match literal {
                LiteralValue::Boolean(_) => FactType::Bool,
                LiteralValue::Int(_) | LiteralValue::UInt(_) => FactType::Int,
                LiteralValue::Double(_) => FactType::Double,
                LiteralValue::String(_) => FactType::String,
                LiteralValue::Bytes(_) => return Err(ExprError::Unsupported("bytes")),
                LiteralValue::Null => FactType::Dyn,
            }),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                // `facts.x`, `params.y`, `subject.name` and fields of list items.
                let path = dotted(node);
                let operand = self.check(&select.operand, next, in_comprehension)?;
                if matches!(&select.operand.expr, Expr::Ident(root) if root == "facts")
                    && self.local("facts").is_none()
                {
                    self.facts_read.insert(select.field.clone());
                }
                match operand {
                    FactType::Object(fields) => match fields.get(&select.field) {
                        Some(field) => Ok(if select.test {
                            FactType::Bool
                        } else {
                            field.ty.clone()
                        }),
                        None => Err(ExprError::UnknownField {
                            what: match path.split('.').next() {
                                Some("facts") => "fact",
                                Some("params") => "parameter",
                                _ => "field",
                            },
                            path,
                        }),
                    },
                    FactType::Dyn => Ok(if select.test {
                        FactType::Bool
                    } else {
                        FactType::Dyn
                    }),
                    ty => Err(ExprError::NotAnObject {
                        path: dotted(&select.operand),
                        ty,
                    }),
                }
            }
            Expr::Call(call) => {
                if !FUNCTIONS.contains(&call.func_name.as_str()) {
                    return Err(ExprError::UnknownFunction(call.func_name.clone()));
                }
                let target = match &call.target {
                    Some(target) => Some(self.check(target, next, in_comprehension)?),
                    None => None,
                };
                let mut args = Vec::with_capacity(call.args.len());
                for arg in &call.args {
                    args.push(self.check(arg, next, in_comprehension)?);
                }
                Ok(call_type(&call.func_name, target.as_ref(), &args))
            }
            Expr::List(list) => {
                let mut item = None;
                for element in &list.elements {
                    let ty = self.check(element, next, in_comprehension)?;
                    item.get_or_insert(ty);
                }
                Ok(FactType::List(Box::new(item.unwrap_or(FactType::Dyn))))
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.check(&entry.key, next, in_comprehension)?;
                            self.check(&entry.value, next, in_comprehension)?;
                        }
                        EntryExpr::StructField(field) => {
                            self.check(&field.value, next, in_comprehension)?;
                        }
                    }
                }
                Ok(FactType::Dyn)
            }
            Expr::Struct(_) => Err(ExprError::Unsupported("message")),
            Expr::Comprehension(comprehension) => {
                if in_comprehension > 0 {
                    return Err(ExprError::NestedComprehension);
                }
                self.comprehensions += 1;
                if self.comprehensions > MAX_COMPREHENSIONS {
                    return Err(ExprError::TooManyComprehensions);
                }
                let range = self.check(&comprehension.iter_range, next, in_comprehension)?;
                let item = match range {
                    FactType::List(item) => *item,
                    _ => FactType::Dyn,
                };
                let accumulator = self.check(&comprehension.accu_init, next, in_comprehension)?;
                let scope = self.locals.len();
                self.locals.push((comprehension.iter_var.clone(), item));
                if let Some(second) = &comprehension.iter_var2 {
                    self.locals.push((second.clone(), FactType::Dyn));
                }
                self.locals
                    .push((comprehension.accu_var.clone(), accumulator.clone()));
                let inner = in_comprehension + 1;
                self.check(&comprehension.loop_cond, next, inner)?;
                self.check(&comprehension.loop_step, next, inner)?;
                let result = self.check(&comprehension.result, next, inner);
                self.locals.truncate(scope);
                result.map(|ty| match ty {
                    // `map` and `filter` build a list in the accumulator.
                    FactType::List(_) | FactType::Bool | FactType::Int => ty,
                    _ => FactType::Dyn,
                })
            }
        }
    }

    fn local(&self, name: &str) -> Option<&FactType> {
        self.locals
            .iter()
            .rev()
            .find(|(local, _)| local == name)
            .map(|(_, ty)| ty)
    }

    fn ident(&self, name: &str) -> Result<FactType, ExprError> {
        if let Some(ty) = self.local(name) {
            return Ok(ty.clone());
        }
        match name {
            "facts" => Ok(FactType::Object(self.env.facts.clone())),
            "params" => Ok(FactType::Object(
                self.env
                    .params
                    .iter()
                    .map(|(name, ty)| {
                        let field = Field {
                            ty: ty.clone(),
                            source: Source::Cluster,
                            description: String::new(),
                        };
                        (name.clone(), field)
                    })
                    .collect(),
            )),
            "subject" => Ok(FactType::Object(self.subject.clone())),
            other => Err(ExprError::UnknownVariable(other.to_string())),
        }
    }
}

/// The type a call yields, as far as it matters for field checks and the bool result.
fn call_type(function: &str, target: Option<&FactType>, args: &[FactType]) -> FactType {
    match function {
        "_&&_"
        | "_||_"
        | "!_"
        | "_==_"
        | "_!=_"
        | "_>=_"
        | "_<=_"
        | "_>_"
        | "_<_"
        | "@in"
        | "@not_strictly_false"
        | "contains"
        | "startsWith"
        | "endsWith"
        | "matches" => FactType::Bool,
        "size" | "int" => FactType::Int,
        "double" => FactType::Double,
        "string" => FactType::String,
        "_?_:_" => args.get(1).cloned().unwrap_or(FactType::Dyn),
        "_[_]" => match args.first() {
            Some(FactType::List(item)) => (**item).clone(),
            _ => FactType::Dyn,
        },
        "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" | "min" | "max" => target
            .or(args.first())
            .cloned()
            .filter(|ty| !matches!(ty, FactType::Object(_)))
            .unwrap_or(FactType::Dyn),
        _ => FactType::Dyn,
    }
}

/// `facts.a.b` for a chain of selects on an identifier; `…` for anything else.
fn dotted(node: &IdedExpr) -> String {
    match &node.expr {
        Expr::Ident(name) => name.clone(),
        Expr::Select(select) => format!("{}.{}", dotted(&select.operand), select.field),
        _ => "…".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{SubjectKind, schema};

    fn compile_for(source: &str, kind: SubjectKind) -> Result<Expression, ExprError> {
        let facts = schema(kind);
        let params = BTreeMap::from([
            ("max_admins".to_string(), FactType::Int),
            (
                "admin_ports".to_string(),
                FactType::List(Box::new(FactType::Int)),
            ),
        ]);
        compile(
            source,
            &Environment {
                facts: &facts,
                params: &params,
            },
        )
    }

    #[test]
    fn known_facts_and_parameters_compile_and_are_recorded() {
        let expression = compile_for(
            "facts.admin_members <= params.max_admins && facts.public_ports.all(p, !(p.port in params.admin_ports))",
            SubjectKind::Municipality,
        )
        .expect("compiles");
        assert_eq!(
            expression.facts_read,
            BTreeSet::from(["admin_members".to_string(), "public_ports".to_string()])
        );
    }

    #[test]
    fn unknown_facts_fields_variables_and_functions_are_refused() {
        let kind = SubjectKind::Municipality;
        assert_eq!(
            compile_for("facts.admins <= 3", kind).unwrap_err(),
            ExprError::UnknownField {
                what: "fact",
                path: "facts.admins".into()
            }
        );
        assert_eq!(
            compile_for("facts.public_ports.all(p, p.portt == 22)", kind).unwrap_err(),
            ExprError::UnknownField {
                what: "field",
                path: "p.portt".into()
            }
        );
        assert!(matches!(
            compile_for("params.nope == 1", kind),
            Err(ExprError::UnknownField {
                what: "parameter",
                ..
            })
        ));
        assert!(matches!(
            compile_for("fact.ready", kind),
            Err(ExprError::UnknownVariable(_))
        ));
        assert!(matches!(
            compile_for("facts.ready.x", kind),
            Err(ExprError::NotAnObject { .. })
        ));
        assert!(matches!(
            compile_for("now() > 1", kind),
            Err(ExprError::UnknownFunction(_))
        ));
        assert!(matches!(
            compile_for("facts.admin_groups + 1", kind),
            Err(ExprError::NotBool(FactType::Int))
        ));
        assert!(matches!(
            compile_for("facts.ready &&", kind),
            Err(ExprError::Parse(_))
        ));
    }

    #[test]
    fn runaway_expressions_are_refused_at_load() {
        let kind = SubjectKind::Realm;
        let nested = "facts.enabled_accounts_days_since_sign_in.all(a, facts.enabled_accounts_days_since_sign_in.all(b, a == b))";
        assert_eq!(
            compile_for(nested, kind).unwrap_err(),
            ExprError::NestedComprehension
        );
        let long = ["1 == 1"; 200].join(" && ");
        assert!(matches!(
            compile_for(&long, kind),
            Err(ExprError::TooLong(_) | ExprError::TooManyNodes)
        ));
        let many = ["facts.lockouts_24h == 1"; 60].join(" || ");
        assert_eq!(
            compile_for(&many, kind).unwrap_err(),
            ExprError::TooManyNodes
        );
        let deep = format!("{}true{}", "!(".repeat(30), ")".repeat(30));
        assert!(matches!(
            compile_for(&deep, kind),
            Err(ExprError::TooDeep | ExprError::Parse(_))
        ));
        let five = ["facts.enabled_accounts_days_since_sign_in.exists(d, d > 1)"; 5].join(" || ");
        assert_eq!(
            compile_for(&five, kind).unwrap_err(),
            ExprError::TooManyComprehensions
        );
    }
}
