//! Issue 14: our action-policy index (`tokaroo_actors::actions::index::PolicyIndex`) against
//! cedar-policy, in one process, on the same policies and checks (the shape of
//! `benches/actions.rs` plus hand-made cases).
//!
//! 1. Cross-checks the two: the same decision and the same winning policy on every check; a
//!    mismatch is printed and the exit code is 1.
//! 2. Times building each engine from the policy set, and each check: p50, p99 and mean in
//!    microseconds.
//! 3. Prints example policies in both forms, for the clarity comparison.
//!
//! `EVAL_POLICIES` (10000) and `EVAL_CHECKS` (2000) size the bench part.

mod cedar;
mod data;

use std::{
    collections::HashMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokaroo_actors::{
    actions::{compile_policy, index::PolicyIndex, CheckInput, PolicyInput, FIELDS},
    money::billing::usd_to_units,
};
use tokaroo_storage::actions::ActionPolicy;

const ACCOUNT: &str = "acct_eval";
/// How many times each build is repeated (the median is reported).
const BUILD_RUNS: usize = 3;
/// Checks run untimed through each engine before the timed pass.
const WARMUP_CHECKS: usize = 100;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// p50, p99 and mean of `samples`, in microseconds.
struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let at = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
        let mean = sorted.iter().sum::<Duration>().as_secs_f64() * 1e6 / sorted.len() as f64;
        Self { p50: at(0.5), p99: at(0.99), mean }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f` [`BUILD_RUNS`] times; the median time and the last result.
fn timed<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..BUILD_RUNS {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], last.expect("at least one run"))
}

/// A policy body as `compile_policy` takes it.
fn policy_input(body: &Value) -> PolicyInput {
    PolicyInput {
        name: body["name"].as_str().expect("a name").to_owned(),
        description: body.get("description").and_then(Value::as_str).map(str::to_owned),
        effect: body["effect"].as_str().expect("an effect").to_owned(),
        priority: body.get("priority").and_then(Value::as_i64),
        status: body.get("status").and_then(Value::as_str).map(str::to_owned),
        matches: body.get("match").and_then(Value::as_object).cloned().unwrap_or_default(),
    }
}

/// A check body as `PolicyIndex::decide` takes it.
fn check_input(body: &Value) -> CheckInput {
    let fields = FIELDS
        .iter()
        .filter_map(|f| body.get(*f).and_then(Value::as_str).map(|v| (f.to_string(), v.to_owned())))
        .collect();
    CheckInput {
        fields,
        requested_amount_usd: body.get("requested_amount_usd").and_then(Value::as_f64),
        metadata: body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
        external_source: None,
        external_id: None,
        by: "eval".into(),
    }
}

fn view(p: &ActionPolicy) -> cedar::PolicyView<'_> {
    cedar::PolicyView {
        workspace: &p.workspace,
        name: &p.name,
        effect: &p.effect,
        priority: p.priority,
        status: &p.status,
        patterns: &p.patterns,
        amount_min_units: p.amount_min_units,
        amount_max_units: p.amount_max_units,
        metadata: &p.metadata,
    }
}

/// Our decision for a check, as the cedar side reports it.
fn our_outcome<'a>(best: Option<&'a ActionPolicy>, fields: &HashMap<String, String>) -> cedar::Outcome<'a> {
    match best {
        Some(p) => (
            match p.effect.as_str() {
                "deny" => "deny",
                "approval" => "approval_required",
                _ => "allow",
            },
            Some((p.workspace.as_str(), p.name.as_str())),
        ),
        None => (cedar::default_decision(fields), None),
    }
}

fn show(outcome: &cedar::Outcome) -> String {
    match &outcome.1 {
        Some(("", name)) => format!("{} by {name:?} (account-wide)", outcome.0),
        Some((workspace, name)) => format!("{} by {name:?} ({workspace})", outcome.0),
        None => format!("{} (no policy: the risk default)", outcome.0),
    }
}

fn compile(workspace: &str, body: &Value) -> ActionPolicy {
    compile_policy(ACCOUNT, workspace, policy_input(body), 0)
        .unwrap_or_else(|e| panic!("policy {} does not compile: {e}", body["name"]))
}

fn main() -> ExitCode {
    let n_policies = env_num("EVAL_POLICIES", 10_000);
    let n_checks = env_num("EVAL_CHECKS", 2_000);
    let bodies = data::policies(n_policies);
    let check_bodies = data::checks(n_checks);
    let n_extra_policies = bodies.len() - n_policies;
    let n_extra_checks = check_bodies.len() - n_checks;

    // Build: ours compiles each body (as the API does on write) and indexes the records (as
    // it does on the first check after a write); Cedar parses one policy text (as it would
    // load a stored .cedar file) and the app reads the annotations its tie-break needs.
    let (t_compile, policies) =
        timed(|| bodies.iter().map(|b| compile(&b.workspace, &b.body)).collect::<Vec<ActionPolicy>>());
    let (t_index, index) = timed(|| PolicyIndex::build(&policies));
    let (t_translate, text) = timed(|| {
        let mut text = String::new();
        for p in &policies {
            match cedar::to_cedar(&view(p)) {
                Ok(Some(t)) => {
                    text.push_str(&t);
                    text.push('\n');
                }
                Ok(None) => {}
                Err(e) => panic!("policy {:?}: {e}", p.name),
            }
        }
        text
    });
    let (t_parse, engine) = timed(|| cedar::CedarEngine::build(&text));
    let engine = match engine {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    let checks: Vec<(&str, CheckInput)> =
        check_bodies.iter().map(|c| (c.workspace.as_str(), check_input(&c.body))).collect();

    // Ours: the amount in ledger units, then the index.
    let run_ours = |(workspace, input): &(&str, CheckInput)| {
        let units = input.requested_amount_usd.map(usd_to_units);
        our_outcome(index.decide(workspace, input, units).expect("the generated checks are cheap"), &input.fields)
    };
    for c in checks.iter().take(WARMUP_CHECKS) {
        std::hint::black_box(run_ours(c));
    }
    let mut ours = Vec::with_capacity(checks.len());
    let mut ours_times = Vec::with_capacity(checks.len());
    for c in &checks {
        let t = Instant::now();
        let outcome = run_ours(c);
        ours_times.push(t.elapsed());
        ours.push(outcome);
    }

    // Cedar: the request (context record) from the check, then authorization and our
    // tie-break over the satisfied policies.
    let request = |(workspace, input): &(&str, CheckInput)| {
        let amount_units = input.requested_amount_usd.map(usd_to_units);
        engine
            .request(&cedar::CheckView { workspace, fields: &input.fields, amount_units, metadata: &input.metadata })
            .expect("a cedar request")
    };
    for c in checks.iter().take(WARMUP_CHECKS) {
        let r = request(c);
        std::hint::black_box(engine.decide(&r, &c.1.fields).ok());
    }
    let mut theirs = Vec::with_capacity(checks.len());
    let (mut cedar_times, mut cedar_auth_times) = (Vec::with_capacity(checks.len()), Vec::with_capacity(checks.len()));
    let mut cedar_errors = 0;
    for c in &checks {
        let t = Instant::now();
        let r = request(c);
        let t_auth = Instant::now();
        let outcome = engine.decide(&r, &c.1.fields);
        let end = Instant::now();
        cedar_times.push(end - t);
        cedar_auth_times.push(end - t_auth);
        theirs.push(outcome.unwrap_or_else(|e| {
            cedar_errors += 1;
            eprintln!("cedar: {e}");
            ("error", None)
        }));
    }

    // 1. The cross-check.
    let mismatches: Vec<usize> = (0..checks.len()).filter(|i| ours[*i] != theirs[*i]).collect();
    let disabled = policies.iter().filter(|p| p.status != "active").count();
    println!(
        "policies: {n_policies} bench + {n_extra_policies} hand-made ({disabled} disabled, left out of the Cedar set: {} Cedar \
         policies); checks: {n_checks} bench + {n_extra_checks} hand-made",
        engine.len()
    );
    let decisions = |outcomes: &[cedar::Outcome]| {
        let count = |d: &str| outcomes.iter().filter(|o| o.0 == d).count();
        let by_default = outcomes.iter().filter(|o| o.1.is_none()).count();
        format!(
            "allow {}, approval_required {}, deny {} ({by_default} of them by the risk default: no policy matched)",
            count("allow"),
            count("approval_required"),
            count("deny")
        )
    };
    println!("decisions (ours): {}", decisions(&ours));
    println!("\nhand-made checks (ours | cedar):");
    for i in n_checks..checks.len() {
        let mark = if ours[i] == theirs[i] { "  " } else { "!!" };
        println!(
            "{mark} [{}] {}\n     {} | {}",
            check_bodies[i].workspace,
            check_bodies[i].body,
            show(&ours[i]),
            show(&theirs[i])
        );
    }
    println!(
        "\ncross-check: {} of {} checks agree on decision and winning policy",
        checks.len() - mismatches.len(),
        checks.len()
    );
    for i in mismatches.iter().take(20) {
        println!(
            "MISMATCH check {i} [{}] {}: ours {} | cedar {}",
            check_bodies[*i].workspace,
            check_bodies[*i].body,
            show(&ours[*i]),
            show(&theirs[*i])
        );
    }
    if mismatches.len() > 20 {
        println!("... and {} more", mismatches.len() - 20);
    }

    // 2. The figures.
    println!("\nbuild over {} policies (median of {BUILD_RUNS}):", policies.len());
    println!(
        "  ours : compile bodies {:.2} ms + index {:.2} ms = {:.2} ms",
        ms(t_compile),
        ms(t_index),
        ms(t_compile + t_index)
    );
    println!(
        "  cedar: parse text + read annotations {:.2} ms   (translating our records to {} KiB of Cedar text: {:.2} ms more)",
        ms(t_parse),
        text.len() / 1024,
        ms(t_translate)
    );
    println!("\nper check over {} checks, microseconds:", checks.len());
    println!("  {:<44} {:>10} {:>10} {:>10}", "", "p50", "p99", "mean");
    for (label, samples) in [
        ("ours (index decide)", &ours_times),
        ("cedar (request + authorize + tie-break)", &cedar_times),
        ("cedar, authorize + tie-break only", &cedar_auth_times),
    ] {
        let s = Stats::of(samples);
        println!("  {label:<44} {:>10.2} {:>10.2} {:>10.2}", s.p50, s.p99, s.mean);
    }

    // 3. Clarity: one bench policy and two hand-made ones in both forms.
    println!("\nexample policies, our JSON body then the Cedar text:");
    let examples = ["p4", "meta-allow-staging", "any-pay"];
    for name in examples {
        if let Some((b, p)) = bodies.iter().zip(&policies).find(|(_, p)| p.name == name) {
            let scope =
                if b.workspace.is_empty() { "account-wide".to_owned() } else { format!("workspace {}", b.workspace) };
            println!("\n--- {name} ({scope}) ---");
            println!("{}", serde_json::to_string_pretty(&b.body).unwrap_or_default());
            match cedar::to_cedar(&view(p)) {
                Ok(Some(t)) => print!("{t}"),
                Ok(None) => println!("(disabled: no Cedar form)"),
                Err(e) => println!("(no Cedar form: {e})"),
            }
        }
    }
    let question = json!({"name": "gmail-any", "effect": "deny", "match": {"tool_ref": "g?ail.*"}});
    match cedar::to_cedar(&view(&compile("default", &question))) {
        Err(e) => println!("\n--- gmail-any: {question}\n(no Cedar form: {e})"),
        Ok(t) => println!("\n--- gmail-any: {question}\n{t:?}"),
    }

    if mismatches.is_empty() && cedar_errors == 0 {
        println!("\ncross-check passed");
        ExitCode::SUCCESS
    } else {
        println!("\ncross-check FAILED: {} mismatches, {cedar_errors} cedar errors", mismatches.len());
        ExitCode::FAILURE
    }
}
