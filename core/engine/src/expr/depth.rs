//! Bounds on how deep an expression may nest, so that no expression, however written,
//! can overflow a thread's stack.
//!
//! The `cel` crate parses and evaluates by recursion. Its parser stops at 96 levels but
//! needs several megabytes of stack to get there (in a debug build 50 nested parentheses
//! overflowed a 2 MiB thread), and its evaluator recurses once per level of the tree,
//! which the parser does not bound at all: `1 + 1 + … + 1` with 200 terms parses
//! iteratively into a tree 200 deep, and evaluating it overflowed a 2 MiB thread. A
//! stack overflow aborts the whole daemon, every pipeline in it, at load or on the first
//! event. So expressions are parsed on a thread of their own with a large stack, and a
//! tree deeper than [`MAX_DEPTH`] is refused with a message, before any event is seen.

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr};
use cel::{Env, IdedExpr, Program};

/// The deepest expression tree sinkd accepts. Written expressions stay far below it (a
/// comprehension over a field with a condition is about 6); the evaluator's recursion to
/// this depth fits the 2 MiB stack of a Tokio worker with room to spare.
pub const MAX_DEPTH: usize = 48;

/// Stack for the parser's thread: ample for its 96 levels in a debug build (only what is
/// touched is committed).
const PARSER_STACK: usize = 64 << 20;

/// Parses `source` on a thread with [`PARSER_STACK`], and refuses a tree deeper than
/// [`MAX_DEPTH`].
pub fn compile(env: &Env, source: &str) -> Result<Program, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse(env, source))
            .map_err(|e| format!("cannot start the expression parser: {e}"))?
            .join()
            .map_err(|_| "the expression parser failed".to_owned())?
    })
}

/// Parses and checks the depth. Runs on the parser's thread, so that a refused tree is
/// dropped there too (dropping recurses once per level as well).
fn parse(env: &Env, source: &str) -> Result<Program, String> {
    let program = env.compile(source).map_err(|e| shortened(e.to_string()))?;
    let depth = depth(program.expression());
    if depth > MAX_DEPTH {
        return Err(format!(
            "the expression nests {depth} levels deep; sinkd allows at most {MAX_DEPTH} \
             (split it into computed columns or upcaster steps)"
        ));
    }
    Ok(program)
}

/// The parser's message, cut short: it quotes the whole source, which may be long.
fn shortened(message: String) -> String {
    const LIMIT: usize = 600;
    match message.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}… (cut short)", &message[..cut]),
        None => message,
    }
}

/// The depth of an expression tree, counted without recursion.
pub fn depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        stack.extend(children(e).into_iter().map(|child| (child, d + 1)));
    }
    deepest
}

/// The expressions of map or struct entries.
fn entries(entries: &[IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

/// The sub-expressions of `e`.
fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(call) => call
            .target
            .as_deref()
            .into_iter()
            .chain(&call.args)
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(select) => vec![&select.operand],
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> [String; 4] {
        [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("1{}", " + 1".repeat(n)),
            format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            format!("{{}}{}", ".a".repeat(n)),
        ]
    }

    #[test]
    fn deep_expressions_are_refused_not_overflowed() {
        let env = crate::expr::environment();
        // And a 50,000-term sum: refused, and dropped, without overflowing this thread.
        let long = format!("1{}", " + 1".repeat(50_000));
        for source in nested(5_000).into_iter().chain([long]) {
            let Err(refused) = compile(&env, &source) else {
                panic!("compiled: {}…", &source[..40]);
            };
            assert!(refused.chars().count() < 700, "short: {refused}");
            let said = refused.to_lowercase();
            assert!(
                said.contains("nests") || said.contains("recursion"),
                "{refused}"
            );
        }
        // Within the bound: compiled, and evaluated on a thread with a worker's stack.
        for source in nested(MAX_DEPTH - 2) {
            let program = compile(&env, &source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let env = env.clone();
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let _ = program.execute(&cel::Context::with_env(env));
                })
                .unwrap()
                .join()
                .expect("evaluated within 2 MiB");
        }
    }
}
