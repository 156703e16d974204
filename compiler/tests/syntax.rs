//! The parser's contract: precedence, spans, recovery across items.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use writ_compiler::ast::*;

fn when(cond: &str) -> Cond {
    let src = format!("rule A \"t\" {{\n  on request\n  when {cond}\n  then allow\n}}\n");
    let (file, diags) = writ_compiler::parse(&src);
    assert!(
        diags.is_empty(),
        "{}",
        writ_compiler::render("t", &src, &diags)
    );
    let Item::Rule(r) = &file.items[0].node else {
        panic!("not a rule")
    };
    r.stmts
        .iter()
        .find_map(|s| match &s.node {
            RuleStmt::When(c) => Some(c.node.clone()),
            _ => None,
        })
        .unwrap()
}

fn shape(c: &Cond) -> String {
    match c {
        Cond::And(p) => format!(
            "and({})",
            p.iter()
                .map(|x| shape(&x.node))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Cond::Or(p) => format!(
            "or({})",
            p.iter()
                .map(|x| shape(&x.node))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Cond::Not(x) => format!("not({})", shape(&x.node)),
        Cond::Bare(o) => match &o.node {
            Operand::Field(f) => f.node.clone(),
            _ => "?".into(),
        },
        Cond::Compare { left, .. } => match &left.node {
            Operand::Field(f) => format!("{}==", f.node),
            _ => "cmp".into(),
        },
        Cond::In { negated, .. } => if *negated { "notin" } else { "in" }.into(),
        Cond::Has { .. } => "has".into(),
        Cond::Error => "error".into(),
    }
}

#[test]
fn not_binds_tighter_than_and_tighter_than_or() {
    assert_eq!(shape(&when("not a and b or c")), "or(and(not(a),b),c)");
    assert_eq!(shape(&when("a or b and c")), "or(a,and(b,c))");
    assert_eq!(shape(&when("not (a or b)")), "not(or(a,b))");
    assert_eq!(shape(&when("a and (b or c) and d")), "and(a,or(b,c),d)");
    assert_eq!(
        shape(&when("model not in [\"x\"] and not model in [\"y\"]")),
        "and(notin,not(in))"
    );
    assert_eq!(
        shape(&when("prompt has pii and model == \"m\"")),
        "and(has,model==)"
    );
}

#[test]
fn spans_point_at_the_source_without_trailing_trivia() {
    let src =
        "rule A \"t\" {\n  on request   # phase\n  when model == \"x\"   # c\n  then allow\n}\n";
    let (file, diags) = writ_compiler::parse(src);
    assert!(diags.is_empty());
    let Item::Rule(r) = &file.items[0].node else {
        panic!()
    };
    let text = |s: Span| &src[s.start as usize..s.end as usize];
    assert_eq!(text(file.items[0].span), &src[..src.len() - 1]);
    assert_eq!(text(r.stmts[0].span), "on request");
    assert_eq!(text(r.stmts[1].span), "when model == \"x\"");
    assert_eq!(file.comments.len(), 2);
    assert_eq!(file.comments[1].text, "# c");
}

#[test]
fn one_syntax_error_per_broken_item_and_the_rest_still_parse() {
    let src = "rule A \"t\" {\n  on request\n  when model = \"x\"\n  then allow\n}\n\nprice \"m\" input 1 output per 1M tokens\n\nrule B \"u\" {\n  on request\n  then allow\n}\n";
    let (file, diags) = writ_compiler::parse(src);
    assert_eq!(diags.len(), 2, "{diags:?}");
    assert!(diags.iter().all(|d| d.code.id() == "E0001"));
    assert_eq!(file.items.len(), 1);
    let rendered = writ_compiler::render("x.policy", src, &diags);
    assert!(rendered.contains("unexpected `=`"), "{rendered}");
    assert!(
        rendered.contains("expected a comparison operator"),
        "{rendered}"
    );
    assert!(rendered.contains("unexpected `per`"), "{rendered}");
}

#[test]
fn strings_keep_regex_backslashes_and_unescape_quotes() {
    let src = "detector d = regex \"a\\.b\\\"c\\\\\"\n";
    let (file, diags) = writ_compiler::parse(src);
    assert!(diags.is_empty());
    let Item::Detector(d) = &file.items[0].node else {
        panic!()
    };
    assert_eq!(d.pattern.node, "a\\.b\"c\\");
    assert_eq!(writ_compiler::format(src).unwrap(), src);
}

#[test]
fn renderer_counts_columns_in_characters() {
    let src = "policy \"é\" version \"x\" {\n  owner \"o\"\n  implements \"i\"\n}\n";
    let diags = writ_compiler::check("p.policy", src);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].line_col(src), (1, 20));
    let out = writ_compiler::render("p.policy", src, &diags);
    assert_eq!(
        out,
        "error[E0403]: invalid version `x`\n --> p.policy:1:20\n  |\n1 | policy \"é\" version \"x\" {\n  |                    ^^^ not a semantic version\n  |\n  = help: write MAJOR.MINOR.PATCH, e.g. \"1.3.0\"\n"
    );
}
