//! An account's active policies, compiled for checks that do not read every policy.
//!
//! Policies are grouped by workspace (`""` holds the account-wide ones); a check reads its
//! workspace's group and the account-wide one. Within a group each policy is filed under one
//! *key field*: the first field, in [`KEY_ORDER`], that it constrains with patterns that all
//! start with literal text, else the first whose patterns all end with literal text
//! (`*.delete`). A pattern without a wildcard is filed by its text (a hash lookup); one with
//! a wildcard by the literal text before it, or after it (a check looks up each prefix or
//! suffix length that some pattern has). Only policies whose field patterns all have a
//! wildcard at both ends somewhere (`*mail*`), or that constrain no field at all, are read
//! for every check. Candidates are
//! then matched in full and ranked: deny over approval over allow, then specificity, then
//! priority, then the smaller name.

use std::{cell::Cell, collections::HashMap};

use serde_json::Value;
use tokaroo_storage::actions::ActionPolicy;

use super::{glob::Glob, CheckInput, FIELDS};

/// The fields a policy is filed under, most selective first.
const KEY_ORDER: [&str; 9] =
    ["tool_ref", "mission_id", "task_id", "actor_ref", "operation", "app", "action_type", "access_level", "risk_level"];

/// A policy with its patterns compiled and its rank precomputed.
struct Compiled {
    policy: ActionPolicy,
    /// (index into [`FIELDS`], patterns one of which the field's value must match).
    fields: Vec<(usize, Vec<Glob>)>,
    metadata: Vec<(String, Vec<Glob>)>,
    rank: (u8, usize, i64),
}

impl Compiled {
    fn new(policy: &ActionPolicy) -> Self {
        let compile = |patterns: &[String]| patterns.iter().map(|p| Glob::new(p)).collect::<Vec<_>>();
        let fields = policy
            .patterns
            .iter()
            .filter_map(|(field, patterns)| Some((FIELDS.iter().position(|f| f == field)?, compile(patterns))))
            .collect();
        let metadata = policy.metadata.iter().map(|(key, patterns)| (key.clone(), compile(patterns))).collect();
        Self {
            policy: policy.clone(),
            fields,
            metadata,
            rank: (effect_rank(&policy.effect), specificity(policy), policy.priority),
        }
    }

    fn matches(
        &self,
        values: &[Option<&str>; FIELDS.len()],
        input: &CheckInput,
        amount_units: Option<i64>,
        steps: &Cell<u64>,
    ) -> bool {
        let any = |globs: &[Glob], value: &str| globs.iter().any(|g| g.matches_counting(value, steps));
        let policy = &self.policy;
        let amount_ok = match (policy.amount_min_units, policy.amount_max_units) {
            (None, None) => true,
            (min, max) => amount_units.is_some_and(|a| min.is_none_or(|m| a >= m) && max.is_none_or(|m| a <= m)),
        };
        amount_ok
            && self.fields.iter().all(|(field, globs)| values[*field].is_some_and(|v| any(globs, v)))
            && self
                .metadata
                .iter()
                .all(|(key, globs)| input.metadata.get(key).and_then(Value::as_str).is_some_and(|v| any(globs, v)))
    }

    /// Whether `self` wins over `other` when both match.
    fn beats(&self, other: &Compiled) -> bool {
        self.rank.cmp(&other.rank).then_with(|| other.policy.name.cmp(&self.policy.name)).is_gt()
    }
}

/// How many things a policy constrains (the more, the more specific); a workspace's own
/// policy is more specific than any account-wide one.
pub fn specificity(policy: &ActionPolicy) -> usize {
    let workspace = if policy.workspace.is_empty() { 0 } else { 1000 };
    workspace
        + policy.patterns.len()
        + policy.metadata.len()
        + usize::from(policy.amount_min_units.is_some() || policy.amount_max_units.is_some())
}

pub fn effect_rank(effect: &str) -> u8 {
    match effect {
        "deny" => 2,
        "approval" => 1,
        _ => 0,
    }
}

/// One workspace's policies (or the account-wide ones), filed by key field.
#[derive(Default)]
struct Group {
    policies: Vec<Compiled>,
    /// Per field of [`FIELDS`]: a pattern's literal text → the policies filed under it.
    exact: [HashMap<String, Vec<u32>>; FIELDS.len()],
    /// Per field: the literal text before a pattern's wildcard → the policies filed under it.
    prefixes: [HashMap<String, Vec<u32>>; FIELDS.len()],
    /// Per field: the byte lengths of those prefixes, ascending.
    prefix_lengths: [Vec<usize>; FIELDS.len()],
    /// Per field: the literal text after the last wildcard of a pattern that starts with one.
    suffixes: [HashMap<String, Vec<u32>>; FIELDS.len()],
    suffix_lengths: [Vec<usize>; FIELDS.len()],
    /// Policies with no key field: read for every check.
    unkeyed: Vec<u32>,
}

impl Group {
    fn add(&mut self, compiled: Compiled) {
        let at = u32::try_from(self.policies.len()).unwrap_or(u32::MAX);
        let key_with = |literal: fn(&Glob) -> &str| {
            KEY_ORDER.iter().find_map(|name| {
                let field = FIELDS.iter().position(|f| f == name)?;
                let (_, globs) = compiled.fields.iter().find(|(f, _)| *f == field)?;
                globs.iter().all(|g| !literal(g).is_empty()).then_some((field, globs))
            })
        };
        if let Some((field, globs)) = key_with(Glob::literal_prefix) {
            for glob in globs {
                match glob {
                    Glob::Exact(text) => self.exact[field].entry(text.clone()).or_default().push(at),
                    other => {
                        let prefix = other.literal_prefix();
                        self.prefixes[field].entry(prefix.to_owned()).or_default().push(at);
                        self.prefix_lengths[field].push(prefix.len());
                    }
                }
            }
        } else if let Some((field, globs)) = key_with(Glob::literal_suffix) {
            for glob in globs {
                let suffix = glob.literal_suffix();
                self.suffixes[field].entry(suffix.to_owned()).or_default().push(at);
                self.suffix_lengths[field].push(suffix.len());
            }
        } else {
            self.unkeyed.push(at);
        }
        self.policies.push(compiled);
    }

    fn finish(&mut self) {
        for lengths in self.prefix_lengths.iter_mut().chain(self.suffix_lengths.iter_mut()) {
            lengths.sort_unstable();
            lengths.dedup();
        }
    }

    /// The best matching policy of this group, if it beats `best`.
    fn best<'a>(
        &'a self,
        values: &[Option<&str>; FIELDS.len()],
        input: &CheckInput,
        amount_units: Option<i64>,
        mut best: Option<&'a Compiled>,
        steps: &Cell<u64>,
    ) -> Option<&'a Compiled> {
        let mut consider = |at: u32| {
            let candidate = &self.policies[at as usize];
            // Past the budget nothing more is matched; `decide` refuses the check.
            if steps.get() > MAX_CHECK_STEPS {
                return;
            }
            if best.is_none_or(|b| candidate.beats(b)) && candidate.matches(values, input, amount_units, steps) {
                best = Some(candidate);
            }
        };
        for (field, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            if let Some(filed) = self.exact[field].get(*value) {
                filed.iter().copied().for_each(&mut consider);
            }
            for &length in &self.prefix_lengths[field] {
                if length > value.len() {
                    break;
                }
                if let Some(filed) = value.get(..length).and_then(|prefix| self.prefixes[field].get(prefix)) {
                    filed.iter().copied().for_each(&mut consider);
                }
            }
            for &length in &self.suffix_lengths[field] {
                if length > value.len() {
                    break;
                }
                let suffix = value.get(value.len() - length..);
                if let Some(filed) = suffix.and_then(|suffix| self.suffixes[field].get(suffix)) {
                    filed.iter().copied().for_each(&mut consider);
                }
            }
        }
        self.unkeyed.iter().copied().for_each(&mut consider);
        best
    }
}

/// An account's active policies, grouped and filed for checks.
#[derive(Default)]
pub struct PolicyIndex {
    groups: HashMap<String, Group>,
}

impl PolicyIndex {
    /// Files the active ones among `policies` (disabled ones never match).
    pub fn build(policies: &[ActionPolicy]) -> Self {
        let mut groups: HashMap<String, Group> = HashMap::new();
        for policy in policies.iter().filter(|p| p.status == "active") {
            groups.entry(policy.workspace.clone()).or_default().add(Compiled::new(policy));
        }
        groups.values_mut().for_each(Group::finish);
        Self { groups }
    }

    /// The policy that decides a check in `workspace`: the best of the matching ones from
    /// the workspace's own and the account-wide policies; `None` when none matches.
    ///
    /// Refused (`TooCostly`) when matching would compare more than [`MAX_CHECK_STEPS`]
    /// characters: never a decision from half the policies, since a deny might be among
    /// the rest.
    pub fn decide(
        &self,
        workspace: &str,
        input: &CheckInput,
        amount_units: Option<i64>,
    ) -> Result<Option<&ActionPolicy>, TooCostly> {
        let values: [Option<&str>; FIELDS.len()] = FIELDS.map(|f| input.fields.get(f).map(String::as_str));
        let own = if workspace.is_empty() { None } else { self.groups.get(workspace) };
        let mut best = None;
        let steps = Cell::new(0);
        for group in [self.groups.get(""), own].into_iter().flatten() {
            best = group.best(&values, input, amount_units, best, &steps);
        }
        if steps.get() > MAX_CHECK_STEPS {
            return Err(TooCostly);
        }
        Ok(best.map(|c| &c.policy))
    }
}

/// The most characters one check's pattern matching may compare: some milliseconds of work.
/// Tenant-written patterns against tenant-sent values can otherwise ask for minutes of it.
pub const MAX_CHECK_STEPS: u64 = 20_000_000;

/// A check whose matching would cost more than [`MAX_CHECK_STEPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooCostly;

impl PolicyIndex {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::json;
    use tokaroo_storage::actions::ActionPolicy;

    use super::{effect_rank, specificity, PolicyIndex};
    use crate::actions::CheckInput;

    /// Glob matching by dynamic programming over every prefix pair: slow, and written
    /// apart from `glob.rs` so the two can disagree.
    fn glob(pattern: &str, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        let mut can = vec![vec![false; t.len() + 1]; p.len() + 1];
        can[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=t.len() {
                can[i][j] = match p[i - 1] {
                    '*' => can[i - 1][j] || (j > 0 && can[i][j - 1]),
                    '?' => j > 0 && can[i - 1][j - 1],
                    c => j > 0 && t[j - 1] == c && can[i - 1][j - 1],
                };
            }
        }
        can[p.len()][t.len()]
    }

    /// What the index must agree with: every policy read, in full.
    fn read_every_policy<'a>(
        policies: &'a [ActionPolicy],
        workspace: &str,
        input: &CheckInput,
        amount: Option<i64>,
    ) -> Option<&'a ActionPolicy> {
        let matches = |p: &ActionPolicy| {
            p.patterns
                .iter()
                .all(|(field, globs)| input.fields.get(field).is_some_and(|v| globs.iter().any(|g| glob(g, v))))
                && match (p.amount_min_units, p.amount_max_units) {
                    (None, None) => true,
                    (min, max) => amount.is_some_and(|a| min.is_none_or(|m| a >= m) && max.is_none_or(|m| a <= m)),
                }
                && p.metadata.iter().all(|(key, globs)| {
                    input.metadata.get(key).and_then(|v| v.as_str()).is_some_and(|v| globs.iter().any(|g| glob(g, v)))
                })
        };
        policies
            .iter()
            .filter(|p| p.status == "active" && (p.workspace.is_empty() || p.workspace == workspace))
            .filter(|p| matches(p))
            .max_by(|a, b| {
                (effect_rank(&a.effect), specificity(a), a.priority)
                    .cmp(&(effect_rank(&b.effect), specificity(b), b.priority))
                    .then(b.name.cmp(&a.name))
            })
    }

    const VALUES: [&str; 9] =
        ["svc1.read", "svc1.write", "svc2.read", "mail.send", "s", "é.x", "*x.read", "svc1*.rd", "s*ite"];
    const PATTERNS: [&str; 15] = [
        "svc1.read",
        "svc1.*",
        "svc?.read",
        "*",
        "*.read",
        "s*",
        "mail.send",
        "svc2.*",
        "é.*",
        "?.x",
        "s",
        "svc1.r*d",
        "*ite",
        "*?",
        "*2*",
    ];
    const FIELDS_USED: [&str; 3] = ["tool_ref", "app", "action_type"];

    fn policy_strategy() -> impl Strategy<Value = ActionPolicy> {
        (
            0usize..3,
            0usize..3,
            -2i64..3,
            any::<bool>(),
            prop::collection::vec((0usize..3, prop::collection::vec(0usize..PATTERNS.len(), 1..3)), 0..3),
            prop::option::of(0i64..50),
            prop::option::of(0i64..50),
            prop::option::of(prop::collection::vec(0usize..PATTERNS.len(), 1..3)),
            0u32..1000,
        )
            .prop_map(|(workspace, effect, priority, disabled, fields, min, max, metadata, name)| {
                let mut patterns: Vec<(String, Vec<String>)> = Vec::new();
                for (field, globs) in fields {
                    if patterns.iter().all(|(f, _)| f != FIELDS_USED[field]) {
                        patterns.push((
                            FIELDS_USED[field].into(),
                            globs.into_iter().map(|g| PATTERNS[g].to_owned()).collect(),
                        ));
                    }
                }
                patterns.sort();
                ActionPolicy {
                    id: format!("pol_{name}"),
                    account_id: "acct".into(),
                    workspace: ["", "ws1", "ws2"][workspace].into(),
                    name: format!("p{name}"),
                    description: None,
                    effect: ["allow", "approval", "deny"][effect].into(),
                    priority,
                    status: if disabled { "disabled" } else { "active" }.into(),
                    patterns,
                    amount_min_units: min,
                    amount_max_units: max.map(|m| m + min.unwrap_or(0)),
                    metadata: metadata
                        .map(|globs| {
                            vec![("env".to_owned(), globs.into_iter().map(|g| PATTERNS[g].to_owned()).collect())]
                        })
                        .unwrap_or_default(),
                    created_at_ms: 0,
                    updated_at_ms: 0,
                }
            })
    }

    fn check_strategy() -> impl Strategy<Value = (CheckInput, Option<i64>)> {
        (
            prop::collection::vec(prop::option::of(0usize..VALUES.len()), 3),
            prop::option::of(0usize..VALUES.len()),
            prop::option::of(0i64..100),
        )
            .prop_map(|(values, env, amount)| {
                let fields: HashMap<String, String> = values
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some((FIELDS_USED[i].to_owned(), VALUES[v?].to_owned())))
                    .collect();
                let metadata =
                    env.map(|e| json!({"env": VALUES[e]}).as_object().cloned().unwrap_or_default()).unwrap_or_default();
                (CheckInput { fields, metadata, ..Default::default() }, amount)
            })
    }

    /// Patterns written to backtrack (`*aaa…ab`) against a long value: the check is
    /// refused once its work passes the budget, instead of holding a worker for minutes;
    /// the same policies against a short value decide as usual.
    #[test]
    fn a_check_too_costly_to_match_is_refused_not_decided_from_part_of_the_policies() {
        let slow: Vec<String> = (0..32).map(|i| format!("*{}b{i}", "a".repeat(250))).collect();
        let policies: Vec<ActionPolicy> = (0..4)
            .map(|i| ActionPolicy {
                id: format!("pol_{i}"),
                account_id: "acct".into(),
                workspace: String::new(),
                name: format!("p{i}"),
                description: None,
                effect: "deny".into(),
                priority: 0,
                status: "active".into(),
                patterns: Vec::new(),
                amount_min_units: None,
                amount_max_units: None,
                metadata: vec![("k".to_owned(), slow.clone())],
                created_at_ms: 0,
                updated_at_ms: 0,
            })
            .collect();
        let index = PolicyIndex::build(&policies);
        let check = |value: String| {
            let mut metadata = serde_json::Map::new();
            metadata.insert("k".into(), json!(value));
            CheckInput { metadata, ..Default::default() }
        };
        assert_eq!(index.decide("", &check("a".repeat(16_000)), None).err(), Some(super::TooCostly));
        let short = check(format!("{}b3", "a".repeat(300)));
        assert_eq!(index.decide("", &short, None).unwrap().map(|p| p.effect.as_str()), Some("deny"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        #[test]
        fn the_index_decides_as_reading_every_policy_would(
            policies in prop::collection::vec(policy_strategy(), 0..40),
            checks in prop::collection::vec(check_strategy(), 1..10),
            workspace in 0usize..3,
        ) {
            // Names are unique within a scope in the store.
            let mut seen = std::collections::HashSet::new();
            let policies: Vec<ActionPolicy> =
                policies.into_iter().filter(|p| seen.insert((p.workspace.clone(), p.name.clone()))).collect();
            let index = PolicyIndex::build(&policies);
            let workspace = ["", "ws1", "ws2"][workspace];
            for (input, amount) in &checks {
                let expected = read_every_policy(&policies, workspace, input, *amount).map(|p| (&p.workspace, &p.name));
                let got = index.decide(workspace, input, *amount).unwrap().map(|p| (&p.workspace, &p.name));
                prop_assert_eq!(got, expected, "check {:?} amount {:?}", input.fields, amount);
            }
        }
    }
}
