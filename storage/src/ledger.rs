//! The money trees: usage rows, their two indexes, credits, per-account balances and daily
//! rollups. They change only through [`LedgerStore::apply`], one sled transaction per batch,
//! so a balance and its rollups always agree with the rows they sum — after a crash too.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sled::{
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree},
    Transactional,
};

use crate::{
    collection::{decode, encode},
    records::{Balance, Credit, RollupCell, UsageRow},
    Collection, KeyTuple, Record, StorageError,
};

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One change to the money trees, as the ledger logs and applies it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum LedgerEvent {
    Usage(Box<UsageRow>),
    Credit(Credit),
}

/// Which usage rows a query wants.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub api_key_id: Option<String>,
    pub workspace_slug: Option<String>,
    pub request_type: Option<String>,
}

impl UsageFilter {
    fn matches(&self, row: &UsageRow) -> bool {
        (self.api_key_id.is_none() || row.api_key_id == self.api_key_id)
            && (self.workspace_slug.is_none() || row.workspace_slug == self.workspace_slug)
            && self.request_type.as_ref().is_none_or(|t| *t == row.request_type)
    }

    pub fn matches_cell(&self, cell: &RollupCell) -> bool {
        (self.api_key_id.is_none() || cell.api_key_id == self.api_key_id)
            && (self.workspace_slug.is_none() || cell.workspace_slug == self.workspace_slug)
            && self.request_type.as_ref().is_none_or(|t| *t == cell.request_type)
    }
}

#[derive(Clone)]
pub struct LedgerStore {
    pub usage: Collection<UsageRow>,
    pub credits: Collection<Credit>,
    pub balances: Collection<Balance>,
    pub rollups: Collection<RollupCell>,
    /// (account_id, api_key_id, created_at_us, id) → the row's key.
    usage_by_key: sled::Tree,
    /// (account_id, workspace, created_at_us, id) → the row's key.
    usage_by_workspace: sled::Tree,
    /// A credit's id → its key in `credits`. Credit ids are unique: the key of `credits` starts
    /// with the time it was logged, so without this index the same payment credited twice
    /// (a retry logged a moment later) would be two keys and two credits.
    credits_by_id: sled::Tree,
}

pub fn usage_key(row: &UsageRow) -> Vec<u8> {
    (row.account_id.as_str(), row.created_at_us, row.id.as_str()).encode_key()
}

fn credit_key(c: &Credit) -> Vec<u8> {
    (c.account_id.as_str(), c.created_at_us, c.id.as_str()).encode_key()
}

fn rollup_key(row: &UsageRow) -> Vec<u8> {
    (
        row.account_id.as_str(),
        row.created_at_us.div_euclid(MICROS_PER_DAY),
        row.workspace_slug.as_deref().unwrap_or(""),
        row.api_key_id.as_deref().unwrap_or(""),
        row.tier.as_str(),
        row.request_type.as_str(),
    )
        .encode_key()
}

impl RollupCell {
    fn add(&mut self, row: &UsageRow) {
        self.requests += 1;
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
        if let Some(ms) = row.latency_ms {
            self.latency_sum_ms += ms;
            self.latency_count += 1;
        }
        self.charged_units += row.charged_units;
        self.actual_cost_units += row.actual_cost_units;
        self.baseline_units += row.baseline_units;
    }

    /// Adds another cell's sums to this one (its dimensions are left as they are).
    pub fn merge(&mut self, other: &RollupCell) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.latency_sum_ms += other.latency_sum_ms;
        self.latency_count += other.latency_count;
        self.charged_units += other.charged_units;
        self.actual_cost_units += other.actual_cost_units;
        self.baseline_units += other.baseline_units;
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StorageError>>;

fn tx_get<R: Record>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<R>> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(decode::<R>(&bytes).map_err(ConflictableTransactionError::Abort)?)),
        None => Ok(None),
    }
}

fn tx_put<R: Record>(tree: &TransactionalTree, key: Vec<u8>, value: &R) -> TxResult<()> {
    tree.insert(key, encode(value).map_err(ConflictableTransactionError::Abort)?)?;
    Ok(())
}

impl LedgerStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            usage: Collection::open(db)?,
            credits: Collection::open(db)?,
            balances: Collection::open(db)?,
            rollups: Collection::open(db)?,
            usage_by_key: db.open_tree("usage_by_key")?,
            usage_by_workspace: db.open_tree("usage_by_workspace")?,
            credits_by_id: db.open_tree("credits_by_id")?,
        })
        .and_then(|store| {
            store.backfill_credit_index()?;
            Ok(store)
        })
    }

    /// Stores written before the `credits_by_id` index existed: index their credits once.
    fn backfill_credit_index(&self) -> Result<(), StorageError> {
        if self.credits_by_id.len() >= self.credits.len() {
            return Ok(());
        }
        for entry in self.credits.tree().iter() {
            let (key, value) = entry?;
            let credit = decode::<Credit>(&value)?;
            self.credits_by_id.insert(credit.id.as_bytes(), key)?;
        }
        Ok(())
    }

    /// The credit (or adjustment) with this id, committed.
    pub fn credit_by_id(&self, id: &str) -> Result<Option<Credit>, StorageError> {
        match self.credits_by_id.get(id.as_bytes())? {
            Some(key) => match self.credits.tree().get(key)? {
                Some(bytes) => Ok(Some(decode::<Credit>(&bytes)?)),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Every committed credit and adjustment, for the ledger to know at start which payments
    /// are already credited.
    pub fn all_credits(&self) -> Result<Vec<Credit>, StorageError> {
        self.credits.all()
    }

    /// An account's credits and adjustments, oldest first.
    pub fn account_credits(&self, account_id: &str) -> Result<Vec<Credit>, StorageError> {
        self.credits.scan_prefix(&(account_id,))
    }

    /// Applies a batch atomically. Events already applied (same key) are skipped, so replaying
    /// a log after a crash never counts anything twice. Returns how many were new.
    pub fn apply(&self, events: &[LedgerEvent]) -> Result<usize, StorageError> {
        let trees = (
            self.usage.tree(),
            &self.usage_by_key,
            &self.usage_by_workspace,
            self.credits.tree(),
            &self.credits_by_id,
            self.balances.tree(),
            self.rollups.tree(),
        );
        let result = trees.transaction(|(usage, by_key, by_workspace, credits, credits_by_id, balances, rollups)| {
            let mut applied = 0;
            let mut balance_deltas: HashMap<&str, Balance> = HashMap::new();
            let mut cells: HashMap<Vec<u8>, RollupCell> = HashMap::new();
            for event in events {
                match event {
                    LedgerEvent::Usage(row) => {
                        let key = usage_key(row);
                        if usage.get(&key)?.is_some() {
                            continue;
                        }
                        tx_put(usage, key.clone(), row.as_ref())?;
                        if let Some(api_key) = &row.api_key_id {
                            let k = (row.account_id.as_str(), api_key.as_str(), row.created_at_us, row.id.as_str());
                            by_key.insert(k.encode_key(), key.clone())?;
                        }
                        if let Some(ws) = &row.workspace_slug {
                            let k = (row.account_id.as_str(), ws.as_str(), row.created_at_us, row.id.as_str());
                            by_workspace.insert(k.encode_key(), key)?;
                        }
                        let delta = balance_deltas.entry(&row.account_id).or_default();
                        delta.charged_units += row.charged_units;
                        delta.usage_rows += 1;
                        cells
                            .entry(rollup_key(row))
                            .or_insert_with(|| RollupCell {
                                day: row.created_at_us.div_euclid(MICROS_PER_DAY),
                                workspace_slug: row.workspace_slug.clone(),
                                api_key_id: row.api_key_id.clone(),
                                tier: row.tier.clone(),
                                request_type: row.request_type.clone(),
                                ..RollupCell::default()
                            })
                            .add(row);
                    }
                    LedgerEvent::Credit(credit) => {
                        // By id, not by key: the same payment logged twice (at two times) is
                        // one credit. The index write is visible to the rest of this batch.
                        if credits_by_id.get(credit.id.as_bytes())?.is_some() {
                            continue;
                        }
                        let key = credit_key(credit);
                        credits_by_id.insert(credit.id.as_bytes(), key.clone())?;
                        tx_put(credits, key, credit)?;
                        let delta = balance_deltas.entry(&credit.account_id).or_default();
                        delta.credited_units += credit.amount_units;
                        delta.credits += 1;
                    }
                }
                applied += 1;
            }
            for (account, delta) in &balance_deltas {
                let key = account.encode_key();
                let mut balance = tx_get::<Balance>(balances, &key)?
                    .unwrap_or_else(|| Balance { account_id: (*account).to_owned(), ..Balance::default() });
                balance.credited_units += delta.credited_units;
                balance.charged_units += delta.charged_units;
                balance.usage_rows += delta.usage_rows;
                balance.credits += delta.credits;
                tx_put(balances, key, &balance)?;
            }
            for (key, delta) in cells {
                let mut cell = tx_get::<RollupCell>(rollups, &key)?.unwrap_or_else(|| RollupCell {
                    requests: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    latency_sum_ms: 0,
                    latency_count: 0,
                    charged_units: 0,
                    actual_cost_units: 0,
                    baseline_units: 0,
                    ..delta.clone()
                });
                cell.merge(&delta);
                tx_put(rollups, key, &cell)?;
            }
            Ok(applied)
        });
        match result {
            Ok(n) => Ok(n),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// One page of an account's usage, newest first, strictly before `before_us`. Returns the
    /// rows and whether older ones exist.
    pub fn usage_page(
        &self,
        account_id: &str,
        filter: &UsageFilter,
        before_us: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<UsageRow>, bool), StorageError> {
        let before = before_us.unwrap_or(i64::MAX);
        let mut rows = Vec::with_capacity(limit.min(1024) + 1);
        let mut take = |row: UsageRow| {
            if filter.matches(&row) {
                rows.push(row);
            }
            rows.len() > limit
        };
        // The narrowest index that covers the filter; the rest is checked row by row.
        if let Some(index_value) = filter
            .api_key_id
            .as_deref()
            .map(|k| (&self.usage_by_key, k))
            .or_else(|| filter.workspace_slug.as_deref().map(|w| (&self.usage_by_workspace, w)))
        {
            let (index, value) = index_value;
            let start = (account_id, value, i64::MIN).encode_key();
            let end = (account_id, value, before).encode_key();
            for entry in index.range(start..end).rev() {
                let (_, primary) = entry?;
                let Some(bytes) = self.usage.tree().get(&primary)? else { continue };
                if take(decode::<UsageRow>(&bytes)?) {
                    break;
                }
            }
        } else {
            let start = (account_id, i64::MIN).encode_key();
            let end = (account_id, before).encode_key();
            for entry in self.usage.tree().range(start..end).rev() {
                let (_, bytes) = entry?;
                if take(decode::<UsageRow>(&bytes)?) {
                    break;
                }
            }
        }
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, has_more))
    }

    /// An account's rows logged at or after `since_us` that name one of `request_ids`:
    /// reads only that time window, for a job that must know whether it was charged.
    pub fn request_ids_since(
        &self,
        account_id: &str,
        since_us: i64,
        request_ids: &std::collections::HashSet<String>,
    ) -> Result<std::collections::HashSet<String>, StorageError> {
        let start = (account_id, since_us).encode_key();
        let end = (account_id, i64::MAX).encode_key();
        let mut found = std::collections::HashSet::new();
        for entry in self.usage.tree().range(start..end) {
            let (_, bytes) = entry?;
            let row = decode::<UsageRow>(&bytes)?;
            if let Some(id) = row.request_id.filter(|id| request_ids.contains(id)) {
                found.insert(id);
            }
        }
        Ok(found)
    }

    /// An account's rollup cells for days `from_day..=to_day`.
    pub fn rollups(&self, account_id: &str, from_day: i64, to_day: i64) -> Result<Vec<RollupCell>, StorageError> {
        let start = (account_id, from_day).encode_key();
        let end = (account_id, to_day.saturating_add(1)).encode_key();
        self.rollups.tree().range(start..end).values().map(|v| decode::<RollupCell>(&v?)).collect()
    }

    /// Recomputes an account's totals from its rows and credits (reconciliation).
    pub fn recompute(&self, account_id: &str) -> Result<Balance, StorageError> {
        let mut out = Balance { account_id: account_id.to_owned(), ..Balance::default() };
        let prefix = (account_id,).encode_key();
        for value in self.usage.tree().scan_prefix(&prefix).values() {
            let row = decode::<UsageRow>(&value?)?;
            out.charged_units += row.charged_units;
            out.usage_rows += 1;
        }
        for value in self.credits.tree().scan_prefix(&prefix).values() {
            let credit = decode::<Credit>(&value?)?;
            out.credited_units += credit.amount_units;
            out.credits += 1;
        }
        Ok(out)
    }

    /// The newest usage row timestamp of an account (the ledger keeps timestamps increasing).
    pub fn last_usage_us(&self, account_id: &str) -> Result<Option<i64>, StorageError> {
        let prefix = (account_id,).encode_key();
        match self.usage.tree().scan_prefix(&prefix).next_back() {
            Some(entry) => Ok(Some(decode::<UsageRow>(&entry?.1)?.created_at_us)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::Store;

    fn row(account: &str, key: &str, ws: Option<&str>, at: i64, charged: i64, request_type: &str) -> UsageRow {
        UsageRow {
            id: format!("u{at}"),
            account_id: account.into(),
            api_key_id: Some(key.into()),
            workspace_slug: ws.map(str::to_owned),
            metadata: Map::new(),
            tier: "auto".into(),
            requested_model: "auto".into(),
            provider: "simulator".into(),
            upstream_model: "m".into(),
            upstream: "provider:simulator:managed".into(),
            routing_method: "auto".into(),
            routing_reason: "test".into(),
            execution_source: "simulator".into(),
            billing_mode: "managed".into(),
            request_type: request_type.into(),
            input_tokens: 10,
            output_tokens: 5,
            actual_cost_units: charged / 2,
            charged_units: charged,
            baseline_units: charged * 2,
            latency_ms: Some(100),
            cache: "miss".into(),
            streamed: false,
            created_at_us: at,
            request_id: None,
            failed_attempts: Vec::new(),
            unit: None,
            units: None,
        }
    }

    fn credit(account: &str, id: &str, amount: i64) -> LedgerEvent {
        LedgerEvent::Credit(Credit {
            id: id.into(),
            account_id: account.into(),
            amount_units: amount,
            source: "manual".into(),
            reference: None,
            note: None,
            created_at_us: 1,
        })
    }

    #[test]
    fn applying_twice_counts_once_and_balances_match_a_recount() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = vec![
            credit("a", "c1", 1_000),
            LedgerEvent::Usage(Box::new(row("a", "k1", Some("w"), 10, 30, "chat"))),
            LedgerEvent::Usage(Box::new(row("a", "k2", None, MICROS_PER_DAY + 5, 70, "embeddings"))),
        ];
        assert_eq!(store.ledger.apply(&events).unwrap(), 3);
        assert_eq!(store.ledger.apply(&events).unwrap(), 0, "a replay is a no-op");
        let balance = store.ledger.balances.get(&"a").unwrap().unwrap();
        assert_eq!(balance.balance_units(), 900);
        assert_eq!((balance.usage_rows, balance.credits), (2, 1));
        assert_eq!(store.ledger.recompute("a").unwrap(), balance);

        let cells = store.ledger.rollups("a", 0, 1).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!(cells.iter().map(|c| c.charged_units).sum::<i64>(), 100);
        assert_eq!(store.ledger.rollups("a", 1, 1).unwrap().len(), 1, "days are ranges");
    }

    #[test]
    fn a_credit_id_counts_once_whenever_and_however_often_it_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = |id: &str, amount: i64, t: i64| {
            let LedgerEvent::Credit(mut c) = credit("a", id, amount) else { unreachable!() };
            c.created_at_us = t;
            LedgerEvent::Credit(c)
        };
        // Twice in one batch, at different times: one credit.
        assert_eq!(store.ledger.apply(&[at("pi_1", 500, 10), at("pi_1", 500, 11)]).unwrap(), 1);
        // Again in a later batch: none.
        assert_eq!(store.ledger.apply(&[at("pi_1", 500, 12), at("refund:ch_1:100", -100, 13)]).unwrap(), 1);
        let balance = store.ledger.balances.get(&"a").unwrap().unwrap();
        assert_eq!((balance.credited_units, balance.credits), (400, 2));
        assert_eq!(store.ledger.recompute("a").unwrap(), balance);
        assert_eq!(store.ledger.credit_by_id("pi_1").unwrap().unwrap().created_at_us, 10);
        assert_eq!(store.ledger.account_credits("a").unwrap().len(), 2);
    }

    #[test]
    fn pages_follow_the_cursor_and_filters_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut events = Vec::new();
        for at in 1..=25 {
            let key = if at % 2 == 0 { "even" } else { "odd" };
            let ws = (at % 5 == 0).then_some("five");
            events.push(LedgerEvent::Usage(Box::new(row(
                "a",
                key,
                ws,
                at,
                1,
                if at > 20 { "embeddings" } else { "chat" },
            ))));
        }
        events.push(LedgerEvent::Usage(Box::new(row("other", "even", None, 30, 1, "chat"))));
        store.ledger.apply(&events).unwrap();
        let all = UsageFilter::default();

        let (first, more) = store.ledger.usage_page("a", &all, None, 10).unwrap();
        assert!(more);
        assert_eq!(first.iter().map(|r| r.created_at_us).collect::<Vec<_>>(), (16..=25).rev().collect::<Vec<_>>());
        let (second, _) = store.ledger.usage_page("a", &all, Some(16), 10).unwrap();
        assert_eq!(second[0].created_at_us, 15);
        let (last, more) = store.ledger.usage_page("a", &all, Some(6), 10).unwrap();
        assert_eq!(last.len(), 5);
        assert!(!more);

        let by_key = UsageFilter { api_key_id: Some("even".into()), ..UsageFilter::default() };
        let (rows, _) = store.ledger.usage_page("a", &by_key, None, 100).unwrap();
        assert_eq!(rows.len(), 12, "another account's rows with the same key id are not shown");
        let by_ws = UsageFilter { workspace_slug: Some("five".into()), ..UsageFilter::default() };
        assert_eq!(store.ledger.usage_page("a", &by_ws, None, 100).unwrap().0.len(), 5);
        let by_type = UsageFilter { request_type: Some("embeddings".into()), ..UsageFilter::default() };
        assert_eq!(store.ledger.usage_page("a", &by_type, None, 100).unwrap().0.len(), 5);
        assert_eq!(store.ledger.last_usage_us("a").unwrap(), Some(25));
    }
}
