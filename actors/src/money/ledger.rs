//! `ledger`: the single writer of balances, credits and usage rows.
//!
//! Money moves in three steps. Before a request goes upstream it **reserves** its worst-case
//! charge: the ledger refuses it (402) when the account's balance minus what other in-flight
//! requests hold cannot cover it, or when it would take its workspace over its monthly budget.
//! When the answer is in, the request **settles**: the hold is released, the real charge is
//! applied, and the usage row is appended to the write-ahead log before the caller is told —
//! from then on a crash cannot lose it. Every few milliseconds the ledger **commits**: the
//! log segment is fsynced and its rows applied to sled in one transaction (rows, indexes,
//! balances, rollups) on the `ledger-commit` thread, so the actor never waits for a disk.
//!
//! Holds live only in memory: when the process dies its holds die with it. At start, the log
//! segments an earlier process left are applied again (idempotently) before anything is served.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc},
    thread::JoinHandle,
    time::Duration,
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde::Serialize;
use serde_json::json;
use tokaroo_storage::{
    ledger::{LedgerEvent, MICROS_PER_DAY},
    records::{Credit, UsageRow},
    wal::{SealedSegment, SyncHandle, Wal},
    StorageError, Store,
};

use crate::tree::{
    inspect::Inspection,
    registry::{ChildRef, Registry, TreeMsg},
    supervisor::{spawn_linked, BoxFuture, ChildSpec, SpawnAt},
};

pub const NAME: &str = "ledger";
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);
/// A log segment is retired (sled flushed, file removed) once it is this old or this big;
/// batches in between are only fsynced and applied, without a sled flush.
const SEGMENT_MAX_AGE: Duration = Duration::from_secs(1);
const SEGMENT_MAX_BYTES: u64 = 16 << 20;
/// How long a caller waits for a restarting ledger before giving up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a payment credit waits for the ledger by default (`EngineConfig::credit_timeout`).
pub const DEFAULT_CREDIT_TIMEOUT: Duration = CALL_TIMEOUT;

pub type HoldId = u64;

/// What a request asks to reserve before it runs.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub account_id: String,
    /// Prepaid accounts are metered; the operator's own account is not.
    pub metered: bool,
    pub amount_units: i64,
    /// The request's workspace and its monthly budget, when it has one.
    pub budget: Option<(String, i64)>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    BillingRequired { balance_units: i64, required_units: i64 },
    BudgetExceeded { budget_units: i64, spent_units: i64 },
}

/// The error a refused reservation answers; `payments_url` is where to add credits.
pub(crate) fn refusal_error(refusal: Refusal, payments_url: &str) -> crate::error::EngineError {
    use crate::money::billing::units_to_usd;
    match refusal {
        Refusal::BillingRequired { balance_units, required_units } => crate::error::EngineError::BillingRequired {
            balance_usd: units_to_usd(balance_units),
            required_usd: units_to_usd(required_units),
            payment_url: payments_url.to_owned(),
        },
        Refusal::BudgetExceeded { budget_units, spent_units } => crate::error::EngineError::BudgetExceeded {
            budget_usd: units_to_usd(budget_units),
            spent_usd: units_to_usd(spent_units),
        },
    }
}

/// One account's money as the ledger sees it now (committed or only logged).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct AccountMoney {
    pub credited_units: i64,
    pub charged_units: i64,
    pub held_units: i64,
}

impl AccountMoney {
    pub fn balance_units(&self) -> i64 {
        self.credited_units - self.charged_units
    }
}

/// An account whose recomputed totals differ from what the ledger holds.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileLine {
    pub account_id: String,
    pub usage_rows: u64,
    pub credits: u64,
    pub recomputed_balance_units: i64,
    pub stored_balance_units: i64,
    pub live_balance_units: i64,
    pub drift_units: i64,
}

/// What a credit did. A credit whose id the ledger already holds (the same payment reported
/// twice: webhook and poll, a retried webhook, a resent call) changes nothing and is an
/// idempotent success: `applied` is false and `money` is the account's money as it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreditOutcome {
    pub money: AccountMoney,
    pub applied: bool,
}

/// A request to take money back from a credited payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjustment {
    /// Unique per adjustment (a retried event carries the same id and changes nothing).
    pub id: String,
    /// The credited payment (the credit's id).
    pub payment_id: String,
    /// "refund" or "dispute": the adjustment's source.
    pub reason: String,
    pub amount: AdjustAmount,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdjustAmount {
    /// Take back this many units.
    Units(i64),
    /// The total taken back for this payment and reason should now be this many units
    /// (Stripe reports a charge's refunds as a running total).
    TotalUnits(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AdjustOutcome {
    /// Logged: `units` taken back (positive).
    Applied { account_id: String, units: i64, money: AccountMoney },
    /// This adjustment id is already in the ledger.
    Duplicate,
    /// Nothing left to take back (the total was reached, or events came out of order).
    Nothing,
    /// No credit with this payment id: not a payment this ledger credited.
    UnknownPayment,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CreditFault {
    /// The next `n` log appends fail as on a full disk.
    FailLogAppends(u32),
    /// The next `count` credits are recorded as usual but answered only after `delay`, so
    /// that their callers time out (a lost answer).
    DelayCreditReplies { count: u32, delay: Duration },
    /// The next `n` batches fail to apply to the store (as on a full disk).
    FailCommits(u32),
}

/// A credit the ledger holds, by id.
struct CreditedPayment {
    account_id: String,
    amount_units: i64,
}

pub enum LedgerMsg {
    Reserve(ReserveRequest, RpcReplyPort<Result<(HoldId, Arc<()>), Refusal>>),
    /// A request ended without a charge (it failed): give its hold back.
    Release(HoldId),
    /// Charges a served request. Replies with the row as written (its timestamp is the
    /// ledger's) once it is in the log.
    Settle {
        hold: Option<HoldId>,
        /// The hold's token, alive until the settle is handled: a hold being settled is
        /// never taken for one whose release was lost.
        alive: Option<Arc<()>>,
        row: Box<UsageRow>,
        reply: RpcReplyPort<Result<(UsageRow, AccountMoney), LedgerError>>,
    },
    /// Adds money once per credit id; replies once the credit is fsynced (see [`CreditOutcome`]).
    Credit(Box<Credit>, RpcReplyPort<Result<CreditOutcome, LedgerError>>),
    /// Takes back part of a credited payment (a refund or a dispute), at most once per id.
    Adjust(Box<Adjustment>, RpcReplyPort<Result<AdjustOutcome, LedgerError>>),
    /// Test-only faults of the credit path (`Engine::ledger_fault`).
    CreditFault(CreditFault),
    Money(String, RpcReplyPort<AccountMoney>),
    /// A workspace's charges this calendar month (UTC).
    MonthSpend {
        account_id: String,
        workspace_slug: String,
        reply: RpcReplyPort<i64>,
    },
    /// Hands what is logged to the committer; with a reply, answers once it is in sled (or
    /// why it could not be: then the actor restarts and replays its log).
    Commit(Option<RpcReplyPort<Result<(), String>>>),
    /// From the committer thread.
    Committed {
        events: usize,
        result: Result<(), StorageError>,
    },
    Reconcile(RpcReplyPort<Result<Vec<ReconcileLine>, LedgerError>>),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for LedgerMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

/// One batch for the committer thread, applied in order.
struct CommitJob {
    /// The segment the batch was logged in, to fsync before applying.
    sync: Option<SyncHandle>,
    events: Vec<LedgerEvent>,
    /// A segment whose events are all applied by the end of this job: flush sled, then remove it.
    retire: Option<SealedSegment>,
    done: Option<RpcReplyPort<Result<(), String>>>,
    /// Fault injection: fail as a store write would.
    fail: bool,
}

#[derive(Default)]
struct Account {
    money: AccountMoney,
    /// The newest row timestamp, so the next one can be made strictly greater.
    last_usage_us: Option<i64>,
    workspaces: HashMap<String, WorkspaceMonth>,
}

#[derive(Default, Clone, Copy)]
struct WorkspaceMonth {
    month: i64,
    spent_units: i64,
    held_units: i64,
}

struct Hold {
    /// Dead once its `HoldGuard` is gone: a release that was lost (sent while the ledger
    /// restarted) is then taken as given.
    alive: std::sync::Weak<()>,
    account_id: String,
    workspace_slug: Option<String>,
    month: i64,
    metered: bool,
    amount_units: i64,
}

pub struct LedgerState {
    wal: Wal,
    pending: Vec<LedgerEvent>,
    commit_scheduled: bool,
    committer: Option<(mpsc::Sender<CommitJob>, JoinHandle<()>)>,
    /// Jobs handed to the committer and not yet reported back.
    jobs_in_flight: usize,
    accounts: HashMap<String, Account>,
    /// Outlives this incarnation (`LedgerActor::holds`): requests in flight keep their
    /// holds across a restart of the ledger.
    holds: SharedHolds,
    next_hold: HoldId,
    rows_logged: u64,
    events_committed: u64,
    batches: u64,
    replayed_at_start: usize,
    last_error: Option<String>,
    /// Every credit id in the ledger (committed or only logged), rebuilt from storage at
    /// start: the check that makes a payment count once happens here, before the log and
    /// the balance, not only in sled's apply (which sees a batch only after the balance moved).
    credited: HashMap<String, CreditedPayment>,
    /// Units taken back per (payment id, reason), to turn running totals into amounts.
    taken_back: HashMap<(String, String), i64>,
    credit_replies_to_delay: Option<(u32, Duration)>,
    /// Fault injection: batches still to fail (`CreditFault::FailCommits`).
    commits_to_fail: u32,
}

pub struct LedgerActor {
    store: Store,
    holds: SharedHolds,
}

/// The open holds, shared by the ledger's incarnations in this process.
type SharedHolds = Arc<std::sync::Mutex<HashMap<HoldId, Hold>>>;

fn lock(holds: &SharedHolds) -> std::sync::MutexGuard<'_, HashMap<HoldId, Hold>> {
    holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// Months since the epoch of a timestamp, e.g. 2026-11 → 2026 * 12 + 10.
fn month_of(us: i64) -> i64 {
    let date = time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1
}

/// The first day (days since the epoch) of a month from [`month_of`].
fn month_first_day(month: i64) -> i64 {
    let year = i32::try_from(month.div_euclid(12)).unwrap_or(1970);
    let month = time::Month::try_from(month.rem_euclid(12) as u8 + 1).unwrap_or(time::Month::January);
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| (d - time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap_or(d)).whole_days())
        .unwrap_or(0)
}

impl LedgerState {
    fn account<'a>(&'a mut self, store: &Store, account_id: &str) -> Result<&'a mut Account, StorageError> {
        if !self.accounts.contains_key(account_id) {
            // Not seen since start: its committed totals are in sled (the log was replayed).
            let balance = store.ledger.balances.get(&account_id)?.unwrap_or_default();
            let account = Account {
                money: AccountMoney {
                    credited_units: balance.credited_units,
                    charged_units: balance.charged_units,
                    held_units: 0,
                },
                last_usage_us: store.ledger.last_usage_us(account_id)?,
                workspaces: HashMap::new(),
            };
            self.accounts.insert(account_id.to_owned(), account);
        }
        Ok(self.accounts.get_mut(account_id).expect("inserted above"))
    }
}

impl Account {
    fn workspace(&mut self, store: &Store, account_id: &str, slug: &str, month: i64) -> &mut WorkspaceMonth {
        let entry = self.workspaces.entry(slug.to_owned()).or_default();
        if entry.month != month {
            // First use this month (or a new month): the month so far comes from the rollups.
            let spent = store
                .ledger
                .rollups(account_id, month_first_day(month), i64::MAX / MICROS_PER_DAY)
                .map(|cells| {
                    cells.iter().filter(|c| c.workspace_slug.as_deref() == Some(slug)).map(|c| c.charged_units).sum()
                })
                .unwrap_or_else(|error| {
                    tracing::error!(%error, "could not read this month's rollups; the budget starts at zero");
                    0
                });
            *entry = WorkspaceMonth { month, spent_units: spent, held_units: 0 };
        }
        entry
    }
}

impl LedgerActor {
    fn log(&self, state: &mut LedgerState, me: &ActorRef<LedgerMsg>, event: LedgerEvent) -> Result<(), StorageError> {
        state.wal.append(&event)?;
        state.pending.push(event);
        if !state.commit_scheduled {
            state.commit_scheduled = true;
            me.send_after(GROUP_COMMIT_WINDOW, || LedgerMsg::Commit(None));
        }
        Ok(())
    }

    fn reserve(
        &self,
        state: &mut LedgerState,
        req: ReserveRequest,
    ) -> Result<Result<(HoldId, Arc<()>), Refusal>, StorageError> {
        let answer = self.try_reserve(state, &req)?;
        if answer.is_ok() || !self.release_dead_holds(state) {
            return Ok(answer);
        }
        // Holds whose guards are gone were counted: ask again without them.
        self.try_reserve(state, &req)
    }

    /// Gives back the holds whose guards were dropped without a release reaching us;
    /// whether there were any.
    fn release_dead_holds(&self, state: &mut LedgerState) -> bool {
        let dead: Vec<HoldId> =
            lock(&state.holds).iter().filter(|(_, h)| h.alive.strong_count() == 0).map(|(id, _)| *id).collect();
        for id in &dead {
            self.release(state, *id);
        }
        !dead.is_empty()
    }

    fn try_reserve(
        &self,
        state: &mut LedgerState,
        req: &ReserveRequest,
    ) -> Result<Result<(HoldId, Arc<()>), Refusal>, StorageError> {
        let req = req.clone();
        let month = month_of(now_us());
        let account = state.account(&self.store, &req.account_id)?;
        if let Some((slug, budget_units)) = &req.budget {
            let ws = account.workspace(&self.store, &req.account_id, slug, month);
            if ws.spent_units + ws.held_units + req.amount_units > *budget_units {
                return Ok(Err(Refusal::BudgetExceeded { budget_units: *budget_units, spent_units: ws.spent_units }));
            }
        }
        if req.metered {
            let available = account.money.balance_units() - account.money.held_units;
            if available < req.amount_units || available <= 0 {
                return Ok(Err(Refusal::BillingRequired {
                    balance_units: account.money.balance_units(),
                    required_units: req.amount_units,
                }));
            }
            account.money.held_units += req.amount_units;
        }
        if let Some((slug, _)) = &req.budget {
            account.workspace(&self.store, &req.account_id, slug, month).held_units += req.amount_units;
        }
        state.next_hold += 1;
        let id = state.next_hold;
        let alive = Arc::new(());
        lock(&state.holds).insert(
            id,
            Hold {
                alive: Arc::downgrade(&alive),
                account_id: req.account_id,
                workspace_slug: req.budget.map(|(slug, _)| slug),
                month,
                metered: req.metered,
                amount_units: req.amount_units,
            },
        );
        Ok(Ok((id, alive)))
    }

    fn release(&self, state: &mut LedgerState, id: HoldId) {
        let Some(hold) = lock(&state.holds).remove(&id) else { return };
        let Some(account) = state.accounts.get_mut(&hold.account_id) else { return };
        if hold.metered {
            account.money.held_units -= hold.amount_units;
        }
        if let Some(ws) = hold.workspace_slug.and_then(|slug| account.workspaces.get_mut(&slug)) {
            if ws.month == hold.month {
                ws.held_units -= hold.amount_units;
            }
        }
    }

    fn settle(
        &self,
        state: &mut LedgerState,
        me: &ActorRef<LedgerMsg>,
        hold: Option<HoldId>,
        mut row: UsageRow,
    ) -> Result<(UsageRow, AccountMoney), StorageError> {
        if let Some(id) = hold {
            self.release(state, id);
        }
        let now = now_us();
        let month = month_of(now);
        let account = state.account(&self.store, &row.account_id)?;
        row.created_at_us = account.last_usage_us.map_or(now, |last| now.max(last + 1));
        account.last_usage_us = Some(row.created_at_us);
        account.money.charged_units += row.charged_units;
        if let Some(slug) = &row.workspace_slug {
            // Tracked from the workspace's first row this month, budget or not: a month loaded
            // later, from the rollups, would miss the rows logged and not yet committed.
            account.workspace(&self.store, &row.account_id, slug, month).spent_units += row.charged_units;
        }
        let money = account.money;
        state.rows_logged += 1;
        self.log(state, me, LedgerEvent::Usage(Box::new(row.clone())))?;
        Ok((row, money))
    }

    fn credit(
        &self,
        state: &mut LedgerState,
        me: &ActorRef<LedgerMsg>,
        mut credit: Credit,
    ) -> Result<CreditOutcome, StorageError> {
        if let Some(known) = state.credited.get(&credit.id) {
            if known.account_id != credit.account_id || known.amount_units != credit.amount_units {
                tracing::error!(id = %credit.id, "a credit id was reported again with another account or amount; kept the first");
            }
            let account_id = known.account_id.clone();
            let money = state.account(&self.store, &account_id)?.money;
            return Ok(CreditOutcome { money, applied: false });
        }
        credit.created_at_us = now_us();
        // Loaded first: after the append nothing may fail before memory shows the credit.
        state.account(&self.store, &credit.account_id)?;
        // The log first: a failed append (a full disk) leaves no phantom credit in memory.
        self.log(state, me, LedgerEvent::Credit(credit.clone()))?;
        // Logged, so it will be applied (now or at the next start): memory must agree.
        let money = Self::remember_credit(state, &credit);
        // Credits are rare and are money someone paid: durable against power loss at once.
        // If this fails the credit still stands (logged, in memory); the caller's retry
        // with the same id is answered as already credited.
        state.wal.sync()?;
        Ok(CreditOutcome { money, applied: true })
    }

    /// Counts a logged credit or adjustment in memory: its id, the taken-back totals, the balance.
    fn remember_credit(state: &mut LedgerState, credit: &Credit) -> AccountMoney {
        state.credited.insert(
            credit.id.clone(),
            CreditedPayment { account_id: credit.account_id.clone(), amount_units: credit.amount_units },
        );
        if credit.amount_units < 0 {
            if let Some(payment) = &credit.reference {
                *state.taken_back.entry((payment.clone(), credit.source.clone())).or_default() -= credit.amount_units;
            }
        }
        match state.accounts.get_mut(&credit.account_id) {
            Some(account) => {
                account.money.credited_units += credit.amount_units;
                account.money
            }
            // Not loaded: its committed balance is read from sled when first needed.
            None => AccountMoney::default(),
        }
    }

    fn adjust(
        &self,
        state: &mut LedgerState,
        me: &ActorRef<LedgerMsg>,
        adj: Adjustment,
    ) -> Result<AdjustOutcome, StorageError> {
        if state.credited.contains_key(&adj.id) {
            return Ok(AdjustOutcome::Duplicate);
        }
        let Some(payment) = state.credited.get(&adj.payment_id).filter(|p| p.amount_units > 0) else {
            return Ok(AdjustOutcome::UnknownPayment);
        };
        let (account_id, paid) = (payment.account_id.clone(), payment.amount_units);
        let this_reason = state.taken_back.get(&(adj.payment_id.clone(), adj.reason.clone())).copied().unwrap_or(0);
        let all_reasons: i64 =
            state.taken_back.iter().filter(|((p, _), _)| *p == adj.payment_id).map(|(_, units)| *units).sum();
        let wanted = match adj.amount {
            AdjustAmount::Units(units) => units,
            AdjustAmount::TotalUnits(total) => total - this_reason,
        };
        // Never more than was paid: a refund after a lost dispute takes back nothing twice.
        let units = wanted.min(paid - all_reasons);
        if units <= 0 {
            return Ok(AdjustOutcome::Nothing);
        }
        let credit = Credit {
            id: adj.id,
            account_id: account_id.clone(),
            amount_units: -units,
            source: adj.reason,
            reference: Some(adj.payment_id),
            note: adj.note,
            created_at_us: 0,
        };
        let outcome = self.credit(state, me, credit)?;
        Ok(AdjustOutcome::Applied { account_id, units, money: outcome.money })
    }

    /// Hands the batch logged since the last commit to the committer. With `retire_now`, also
    /// closes the current segment so it is flushed and removed (shutdown, reconciliation).
    fn commit(
        &self,
        state: &mut LedgerState,
        done: Option<RpcReplyPort<Result<(), String>>>,
        retire_now: bool,
    ) -> Result<(), StorageError> {
        state.commit_scheduled = false;
        let events = std::mem::take(&mut state.pending);
        if events.is_empty() && state.jobs_in_flight == 0 && !retire_now {
            if let Some(done) = done {
                let _ = done.send(Ok(()));
            }
            return Ok(());
        }
        let sync = (!events.is_empty()).then(|| state.wal.sync_handle());
        let (age, size) = state.wal.current_age_and_size();
        let retire =
            if (retire_now || age >= SEGMENT_MAX_AGE || size >= SEGMENT_MAX_BYTES) && !state.wal.is_current_empty() {
                Some(state.wal.rotate()?)
            } else {
                None
            };
        let fail = state.commits_to_fail > 0 && !events.is_empty();
        state.commits_to_fail -= u32::from(fail);
        let job = CommitJob { sync, events, retire, done, fail };
        let unsent = match &state.committer {
            Some((tx, _)) => tx.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        match unsent {
            None => state.jobs_in_flight += 1,
            // No committer thread: apply here rather than lose the batch.
            Some(job) => run_job(&self.store, job, true)?,
        }
        Ok(())
    }

    async fn reconcile(
        &self,
        me: &ActorRef<LedgerMsg>,
        state: &mut LedgerState,
    ) -> Result<Vec<ReconcileLine>, StorageError> {
        // Drain the committer so sled holds everything the ledger knows.
        self.commit(state, None, true)?;
        if let Some((tx, handle)) = state.committer.take() {
            drop(tx);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        state.jobs_in_flight = 0;
        state.committer = Some(spawn_committer(self.store.clone(), Some(me.clone())));
        let store = self.store.clone();
        let live: HashMap<String, i64> =
            state.accounts.iter().map(|(id, a)| (id.clone(), a.money.balance_units())).collect();
        let lines = tokio::task::spawn_blocking(move || -> Result<Vec<ReconcileLine>, StorageError> {
            let mut lines = Vec::new();
            for stored in store.ledger.balances.all()? {
                let recomputed = store.ledger.recompute(&stored.account_id)?;
                let live_balance = live.get(&stored.account_id).copied().unwrap_or(stored.balance_units());
                lines.push(ReconcileLine {
                    account_id: stored.account_id.clone(),
                    usage_rows: recomputed.usage_rows,
                    credits: recomputed.credits,
                    recomputed_balance_units: recomputed.balance_units(),
                    stored_balance_units: stored.balance_units(),
                    live_balance_units: live_balance,
                    drift_units: (stored.balance_units() - recomputed.balance_units()).abs()
                        + (live_balance - recomputed.balance_units()).abs(),
                });
            }
            Ok(lines)
        })
        .await
        .map_err(|e| StorageError::Corrupt { tree: "balances".into(), detail: e.to_string() })??;
        Ok(lines)
    }
}

/// Fsyncs the batch's segment, applies the batch, and retires a finished segment, unless
/// `may_retire` is false: after a failed batch no segment may go, since one may hold that
/// batch's events, which only the log then has (the restarted ledger replays it).
fn run_job(store: &Store, job: CommitJob, may_retire: bool) -> Result<(), StorageError> {
    let result = (|| -> Result<(), StorageError> {
        if let Some(sync) = &job.sync {
            sync.sync()?;
        }
        if job.fail {
            return Err(StorageError::Invalid("injected: the store refused the batch".into()));
        }
        if !job.events.is_empty() {
            store.ledger.apply(&job.events)?;
        }
        if let Some(segment) = job.retire {
            // Its events are in sled; once sled is durable the log is no longer needed.
            store.flush_blocking()?;
            if may_retire {
                segment.remove()?;
            }
        }
        Ok(())
    })();
    if let Some(done) = job.done {
        let _ = done.send(result.as_ref().map(|_| ()).map_err(ToString::to_string));
    }
    result
}

fn spawn_committer(store: Store, ledger: Option<ActorRef<LedgerMsg>>) -> (mpsc::Sender<CommitJob>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<CommitJob>();
    // Allow-list: the commit thread is owned by the ledger actor, which joins it when it stops
    // or reconciles; its sender drops with the actor's state, so it also ends after a failure.
    #[allow(clippy::disallowed_methods)]
    let handle = std::thread::Builder::new()
        .name("ledger-commit".into())
        .spawn(move || {
            let mut failed_before = false;
            for job in rx {
                let events = job.events.len();
                let result = if failed_before {
                    // Not applied at all: a waiter told "in sled" would look for a row of the
                    // failed batch, miss it, and settle it again.
                    let refused = "an earlier batch failed; the ledger restarts and replays its log";
                    if let Some(done) = job.done {
                        let _ = done.send(Err(refused.to_owned()));
                    }
                    Err(StorageError::Invalid(refused.into()))
                } else {
                    run_job(&store, job, true)
                };
                if let Err(error) = &result {
                    // The segment stays on disk (and every later one): the ledger restarts
                    // on this failure and its recovery applies them.
                    tracing::error!(%error, events, "ledger commit failed");
                    failed_before = true;
                }
                if let Some(ledger) = &ledger {
                    let _ = ledger.cast(LedgerMsg::Committed { events, result });
                }
            }
        })
        .expect("spawn the ledger-commit thread");
    (tx, handle)
}

/// Applies what earlier processes (or incarnations) logged but did not commit.
fn recover(store: &Store) -> Result<(Wal, usize), StorageError> {
    let (wal, leftovers) = Wal::open(&store.wal_dir())?;
    let mut replayed = 0;
    for (segment, events) in leftovers {
        replayed += events.len();
        store.ledger.apply(&events)?;
        store.flush_blocking()?;
        segment.remove()?;
    }
    Ok((wal, replayed))
}

impl Actor for LedgerActor {
    type Msg = LedgerMsg;
    type State = LedgerState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<LedgerMsg>, _: ()) -> Result<LedgerState, ActorProcessingErr> {
        let store = self.store.clone();
        let (wal, replayed) = tokio::task::spawn_blocking(move || recover(&store)).await??;
        if replayed > 0 {
            tracing::info!(events = replayed, "ledger: applied events logged before the last stop");
        }
        // After recovery sled holds every credit ever logged: index them by id.
        let store = self.store.clone();
        let credits = tokio::task::spawn_blocking(move || store.ledger.all_credits()).await??;
        let mut credited = HashMap::with_capacity(credits.len());
        let mut taken_back: HashMap<(String, String), i64> = HashMap::new();
        for credit in credits {
            if let (true, Some(payment)) = (credit.amount_units < 0, &credit.reference) {
                *taken_back.entry((payment.clone(), credit.source.clone())).or_default() -= credit.amount_units;
            }
            credited.insert(
                credit.id,
                CreditedPayment { account_id: credit.account_id, amount_units: credit.amount_units },
            );
        }
        let mut state = LedgerState {
            wal,
            pending: Vec::new(),
            commit_scheduled: false,
            jobs_in_flight: 0,
            committer: Some(spawn_committer(self.store.clone(), Some(me))),
            accounts: HashMap::new(),
            holds: self.holds.clone(),
            // Hold ids must not repeat across restarts: a request may still carry one from
            // the incarnation before, and releasing it must not free someone else's hold.
            next_hold: now_us() as u64,
            rows_logged: 0,
            events_committed: 0,
            batches: 0,
            replayed_at_start: replayed,
            last_error: None,
            credited,
            taken_back,
            credit_replies_to_delay: None,
            commits_to_fail: 0,
        };
        // Holds an earlier incarnation granted still stand: count them against their
        // accounts and budgets again.
        let month = month_of(now_us());
        lock(&state.holds).retain(|_, h| h.alive.strong_count() > 0);
        let newest = lock(&state.holds).keys().max().copied().unwrap_or(0);
        state.next_hold = state.next_hold.max(newest);
        let held: Vec<(String, Option<String>, i64, bool, i64)> = lock(&state.holds)
            .values()
            .map(|h| (h.account_id.clone(), h.workspace_slug.clone(), h.month, h.metered, h.amount_units))
            .collect();
        for (account_id, slug, hold_month, metered, amount) in held {
            let account = state.account(&self.store, &account_id)?;
            if metered {
                account.money.held_units += amount;
            }
            if let Some(slug) = slug.filter(|_| hold_month == month) {
                account.workspace(&self.store, &account_id, &slug, month).held_units += amount;
            }
        }
        Ok(state)
    }

    async fn post_stop(&self, _me: ActorRef<LedgerMsg>, state: &mut LedgerState) -> Result<(), ActorProcessingErr> {
        self.commit(state, None, true)?;
        if let Some((tx, handle)) = state.committer.take() {
            drop(tx);
            tokio::task::spawn_blocking(move || handle.join())
                .await?
                .map_err(|_| "the ledger-commit thread panicked")?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<LedgerMsg>,
        msg: LedgerMsg,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LedgerMsg::Reserve(req, reply) => {
                // A caller that stopped waiting (timed out, or its client left) never gets
                // the hold to release: give it back at once, or it would pin the balance.
                if let Err(ractor::MessagingErr::SendErr(Ok((id, _)))) = reply.send(self.reserve(state, req)?) {
                    self.release(state, id);
                }
            }
            LedgerMsg::Release(id) => self.release(state, id),
            LedgerMsg::Settle { hold, row, reply, .. } => {
                let result = self.settle(state, &me, hold, *row);
                let failed = result.as_ref().err().map(|e| e.to_string());
                let _ = reply.send(result.map_err(LedgerError::from));
                if let Some(error) = failed {
                    state.last_error = Some(error.clone());
                    return Err(error.into());
                }
            }
            LedgerMsg::Credit(credit, reply) => {
                let result = self.credit(state, &me, *credit).map_err(LedgerError::from);
                match &mut state.credit_replies_to_delay {
                    Some((count, delay)) if *count > 0 => {
                        *count -= 1;
                        let delay = *delay;
                        // Allow-list: fault injection only (a credit whose answer is late).
                        #[allow(clippy::disallowed_methods)]
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = reply.send(result);
                        });
                    }
                    _ => {
                        let _ = reply.send(result);
                    }
                }
            }
            LedgerMsg::Adjust(adj, reply) => {
                let _ = reply.send(self.adjust(state, &me, *adj).map_err(LedgerError::from));
            }
            LedgerMsg::CreditFault(CreditFault::FailLogAppends(n)) => state.wal.fail_next_appends(n),
            LedgerMsg::CreditFault(CreditFault::DelayCreditReplies { count, delay }) => {
                state.credit_replies_to_delay = Some((count, delay));
            }
            LedgerMsg::CreditFault(CreditFault::FailCommits(n)) => state.commits_to_fail = n,
            LedgerMsg::Money(account_id, reply) => {
                let money = state.account(&self.store, &account_id)?.money;
                let _ = reply.send(money);
            }
            LedgerMsg::MonthSpend { account_id, workspace_slug, reply } => {
                let month = month_of(now_us());
                let account = state.account(&self.store, &account_id)?;
                let _ = reply.send(account.workspace(&self.store, &account_id, &workspace_slug, month).spent_units);
            }
            LedgerMsg::Commit(done) => self.commit(state, done, false)?,
            LedgerMsg::Committed { events, result } => {
                state.jobs_in_flight = state.jobs_in_flight.saturating_sub(1);
                match result {
                    Ok(()) => {
                        state.events_committed += events as u64;
                        state.batches += u64::from(events > 0);
                    }
                    Err(error) => {
                        // The batch is only in the log now: restart, and recovery replays it.
                        state.last_error = Some(error.to_string());
                        return Err(format!("a ledger commit failed: {error}").into());
                    }
                }
            }
            LedgerMsg::Reconcile(reply) => {
                let result = self.reconcile(&me, state).await;
                let _ = reply.send(result.map_err(LedgerError::from));
            }
            LedgerMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "pending_events": state.pending.len(),
                    "rows_logged": state.rows_logged,
                    "events_committed": state.events_committed,
                    "batches": state.batches,
                    "open_holds": lock(&state.holds).len(),
                    "accounts_loaded": state.accounts.len(),
                    "replayed_at_start": state.replayed_at_start,
                    "credits_known": state.credited.len(),
                    "last_error": state.last_error,
                })));
            }
            LedgerMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct LedgerSpec {
    pub store: Store,
    /// The open holds, kept across the ledger's restarts.
    holds: SharedHolds,
}

impl LedgerSpec {
    pub fn new(store: Store) -> Self {
        Self { store, holds: SharedHolds::default() }
    }
}

impl ChildSpec for LedgerSpec {
    fn name(&self) -> String {
        NAME.to_owned()
    }
    fn kind(&self) -> &'static str {
        "ledger"
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        Box::pin(spawn_linked(LedgerActor { store: self.store.clone(), holds: self.holds.clone() }, (), at))
    }
}

/// Starts a ledger on its own, outside the actor tree (benches and tools), found through
/// `registry`. Stop it with `stop_and_wait` to commit what it logged.
pub async fn spawn_standalone(store: Store, registry: &Registry) -> Result<ActorRef<LedgerMsg>, SpawnErr> {
    let (actor, _) = Actor::spawn(None, LedgerActor { store, holds: SharedHolds::default() }, ()).await?;
    registry.register(NAME.to_owned(), ChildRef::of(&actor));
    Ok(actor)
}

/// Why a call to the ledger failed. Refusing a reservation is an answer, not a failure
/// ([`Refusal`]), and so is a credit id the ledger already holds ([`CreditOutcome::applied`]).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Restarting, or no answer in time. A call that was delivered may still be recorded, so
    /// it is never resent.
    #[error("the ledger is restarting; retry shortly")]
    Unavailable,
    /// The log or the store failed (a full disk, say). A credit whose log append succeeded
    /// still counts even if the fsync after it failed.
    #[error("the ledger could not record this: {0}")]
    Storage(#[from] StorageError),
    /// A batch could not be applied to the store; the ledger restarts and replays its log.
    #[error("the ledger could not commit: {0}")]
    Commit(String),
    /// The task that waits out a restart on a settle's behalf ended without an answer.
    #[error("the ledger could not record this: the settle task failed: {0}")]
    SettleTask(#[from] tokio::task::JoinError),
}

/// A client of the `ledger` actor, resolved by name in its engine's registry on each call,
/// so it survives restarts.
#[derive(Clone)]
pub struct LedgerClient {
    registry: Registry,
}

impl LedgerClient {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    fn actor(&self) -> Option<ActorRef<LedgerMsg>> {
        self.registry.actor::<LedgerMsg>(NAME)
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl Fn(RpcReplyPort<T>) -> LedgerMsg + Send + Clone,
    ) -> Result<T, LedgerError> {
        self.call_within(msg, CALL_TIMEOUT).await
    }

    async fn call_within<T: Send + 'static>(
        &self,
        msg: impl Fn(RpcReplyPort<T>) -> LedgerMsg + Send + Clone,
        timeout: Duration,
    ) -> Result<T, LedgerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ledger) = self.actor() {
                match ledger.call(msg.clone(), Some(timeout)).await {
                    Ok(ractor::rpc::CallResult::Success(v)) => return Ok(v),
                    // It may still act on the message: asking again could charge twice.
                    Ok(ractor::rpc::CallResult::Timeout) => return Err(LedgerError::Unavailable),
                    // Not delivered, or the actor stopped before answering: it is restarting.
                    Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {}
                }
            }
            // Restarting: the supervisor brings it back within its backoff.
            if tokio::time::Instant::now() >= deadline {
                return Err(LedgerError::Unavailable);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn reserve(&self, req: ReserveRequest) -> Result<Result<HoldGuard, Refusal>, LedgerError> {
        let id = self.call(move |r| LedgerMsg::Reserve(req.clone(), r)).await?;
        Ok(id.map(|(id, alive)| HoldGuard { id: Some(id), ledger: self.clone(), alive }))
    }

    /// Records a served request. When this returns Ok, the row survives a crash. Returns the
    /// row as written and the account's money after it.
    pub async fn settle(
        &self,
        hold: Option<HoldGuard>,
        row: UsageRow,
    ) -> Result<(UsageRow, AccountMoney), LedgerError> {
        let (hold, alive) = match hold {
            Some(mut h) => (h.id.take(), Some(h.alive.clone())),
            None => (None, None),
        };
        let row = Arc::new(row);
        let msg = move |reply| LedgerMsg::Settle { hold, alive: alive.clone(), row: Box::new((*row).clone()), reply };
        if let Some(ledger) = self.actor() {
            // The message is in the mailbox once this is first polled; a caller that stops
            // waiting after that cannot cancel the settle.
            match ledger.call(msg.clone(), Some(CALL_TIMEOUT)).await {
                Ok(ractor::rpc::CallResult::Success(v)) => return v,
                Ok(ractor::rpc::CallResult::Timeout) => return Err(LedgerError::Unavailable),
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {}
            }
        }
        // Restarting: wait for it in a task of its own, so that a caller that stops waiting
        // (its client went away) cannot cancel the settle. The answer was served either way.
        let client = self.clone();
        // Allow-list: a settle waiting out a ledger restart, bounded by `CALL_TIMEOUT`.
        #[allow(clippy::disallowed_methods)]
        let waiting = tokio::spawn(async move { client.call(msg).await });
        waiting.await??
    }

    /// Credits once per `credit.id`. A call that times out is not sent again (the ledger may
    /// still record it); its caller reports the failure and the payment's next report (a
    /// webhook retry, the reconciler) is answered idempotently. `within` bounds the wait.
    pub async fn credit(&self, credit: Credit, within: Duration) -> Result<CreditOutcome, LedgerError> {
        let credit = Arc::new(credit);
        self.call_within(move |r| LedgerMsg::Credit(Box::new((*credit).clone()), r), within).await?
    }

    pub async fn adjust(&self, adjustment: Adjustment) -> Result<AdjustOutcome, LedgerError> {
        let adjustment = Arc::new(adjustment);
        self.call(move |r| LedgerMsg::Adjust(Box::new((*adjustment).clone()), r)).await?
    }

    /// Test-only: see [`CreditFault`].
    pub fn credit_fault(&self, fault: CreditFault) -> Result<(), LedgerError> {
        let ledger = self.actor().ok_or(LedgerError::Unavailable)?;
        ledger.cast(LedgerMsg::CreditFault(fault)).map_err(|_| LedgerError::Unavailable)
    }

    pub async fn money(&self, account_id: &str) -> Result<AccountMoney, LedgerError> {
        let id = account_id.to_owned();
        self.call(move |r| LedgerMsg::Money(id.clone(), r)).await
    }

    pub async fn month_spend(&self, account_id: &str, workspace_slug: &str) -> Result<i64, LedgerError> {
        let (account_id, workspace_slug) = (account_id.to_owned(), workspace_slug.to_owned());
        self.call(move |reply| LedgerMsg::MonthSpend {
            account_id: account_id.clone(),
            workspace_slug: workspace_slug.clone(),
            reply,
        })
        .await
    }

    /// Waits until everything logged so far is applied to sled; an error when it could not
    /// be (the ledger then restarts and replays its log).
    pub async fn commit(&self) -> Result<(), LedgerError> {
        self.call(|r| LedgerMsg::Commit(Some(r))).await?.map_err(LedgerError::Commit)
    }

    pub async fn reconcile(&self) -> Result<Vec<ReconcileLine>, LedgerError> {
        self.call(LedgerMsg::Reconcile).await?
    }
}

/// A reservation; dropping it unsettled (the request failed or its client went away)
/// gives the money back.
pub struct HoldGuard {
    id: Option<HoldId>,
    ledger: LedgerClient,
    /// The ledger sees the hold die with it, should the release message be lost.
    alive: Arc<()>,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Some(ledger) = self.ledger.actor() {
                let _ = ledger.cast(LedgerMsg::Release(id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_row(id: &str) -> UsageRow {
        UsageRow {
            id: id.into(),
            account_id: "acct".into(),
            api_key_id: Some("key".into()),
            workspace_slug: None,
            metadata: Default::default(),
            tier: "auto".into(),
            requested_model: "auto".into(),
            provider: "openai".into(),
            upstream_model: "gpt-4o-mini".into(),
            upstream: "provider:openai:managed".into(),
            routing_method: "auto".into(),
            routing_reason: "test".into(),
            execution_source: "managed".into(),
            billing_mode: "managed".into(),
            request_type: "chat".into(),
            input_tokens: 10,
            output_tokens: 5,
            actual_cost_units: 100,
            charged_units: 110,
            baseline_units: 500,
            latency_ms: Some(1),
            cache: "miss".into(),
            streamed: true,
            created_at_us: 0,
            request_id: None,
            failed_attempts: Vec::new(),
            unit: None,
            units: None,
        }
    }

    #[tokio::test]
    async fn a_settle_whose_caller_gives_up_during_a_restart_is_still_recorded() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // No ledger yet, as while it restarts: the settle waits for it.
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.settle(None, usage_row("abandoned")).await }
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
        waiting.abort();
        let _ = waiting.await;
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            client.commit().await.unwrap();
            let recorded = store.ledger.balances.get(&"acct").unwrap().map(|b| b.usage_rows);
            if recorded == Some(1) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the abandoned settle was never recorded: {recorded:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    }

    fn payment(id: &str, amount_units: i64) -> Credit {
        Credit {
            id: id.into(),
            account_id: "acct".into(),
            amount_units,
            source: "top_up".into(),
            reference: Some(id.into()),
            note: None,
            created_at_us: 0,
        }
    }

    async fn money_now(client: &LedgerClient) -> AccountMoney {
        client.money("acct").await.unwrap()
    }

    #[tokio::test]
    async fn one_payment_credited_concurrently_and_again_counts_once_across_a_restart() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        let within = DEFAULT_CREDIT_TIMEOUT;
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.credit(payment("pi_same", 1_000), within).await })
            })
            .collect();
        let mut applied = 0;
        for call in calls {
            let outcome = call.await.unwrap().unwrap();
            applied += usize::from(outcome.applied);
            // Every answer, first or repeated, shows the balance with the payment in it once.
            assert_eq!(outcome.money.credited_units, 1_000);
        }
        assert_eq!(applied, 1, "one of eight concurrent credits of one payment applies");
        let again = client.credit(payment("pi_same", 1_000), within).await.unwrap();
        assert_eq!((again.applied, again.money.balance_units()), (false, 1_000));
        client.commit().await.unwrap();
        assert_eq!(store.ledger.balances.get(&"acct").unwrap().unwrap().credited_units, 1_000);
        assert_eq!(store.ledger.recompute("acct").unwrap().credits, 1);
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();

        // A new incarnation knows the payment from storage.
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        let after = client.credit(payment("pi_same", 1_000), within).await.unwrap();
        assert_eq!((after.applied, after.money.balance_units()), (false, 1_000));
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
        assert_eq!(store.ledger.recompute("acct").unwrap().credited_units, 1_000);
    }

    #[tokio::test]
    async fn a_credit_whose_log_append_fails_changes_nothing_and_can_be_retried() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        client.credit_fault(CreditFault::FailLogAppends(1)).unwrap();
        let err = client.credit(payment("pi_disk_full", 700), DEFAULT_CREDIT_TIMEOUT).await.unwrap_err();
        assert!(matches!(err, LedgerError::Storage(_)), "{err:?}");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert_eq!(money_now(&client).await.credited_units, 0, "no phantom credit in memory");
        let retried = client.credit(payment("pi_disk_full", 700), DEFAULT_CREDIT_TIMEOUT).await.unwrap();
        assert_eq!((retried.applied, retried.money.credited_units), (true, 700));
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
        assert_eq!(store.ledger.recompute("acct").unwrap().credited_units, 700);
    }

    /// A batch the store refused is reported to whoever waits on the commit (never a false
    /// "in sled"), the ledger restarts on it, and its log replays the charge: nothing lost,
    /// nothing twice.
    #[tokio::test]
    async fn a_batch_the_store_refuses_is_reported_and_replayed_from_the_log() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        client.settle(None, usage_row("row-kept")).await.unwrap();
        client.credit_fault(CreditFault::FailCommits(1)).unwrap();
        let err = client.commit().await.unwrap_err();
        assert!(matches!(err, LedgerError::Commit(_)), "{err:?}");
        assert!(store.ledger.recompute("acct").unwrap().usage_rows == 0, "not in the store yet");
        // The ledger stopped on the failure; the next one replays its log.
        for _ in 0..100 {
            if ledger.get_status() == ractor::ActorStatus::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ledger.get_status(), ractor::ActorStatus::Stopped);
        let again = spawn_standalone(store.clone(), &registry).await.unwrap();
        client.commit().await.unwrap();
        let recomputed = store.ledger.recompute("acct").unwrap();
        assert_eq!((recomputed.usage_rows, recomputed.charged_units), (1, 110), "the charge, once");
        again.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    }

    #[tokio::test]
    async fn adjustments_take_back_running_totals_once_and_never_more_than_was_paid() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        client.credit(payment("pi_1", 1_000), DEFAULT_CREDIT_TIMEOUT).await.unwrap();
        let refund = |total: i64| Adjustment {
            id: format!("refund:ch_1:{total}"),
            payment_id: "pi_1".into(),
            reason: "refund".into(),
            amount: AdjustAmount::TotalUnits(total),
            note: None,
        };
        let taken = |o: AdjustOutcome| match o {
            AdjustOutcome::Applied { units, .. } => units,
            other => panic!("{other:?}"),
        };
        assert_eq!(taken(client.adjust(refund(300)).await.unwrap()), 300);
        assert_eq!(client.adjust(refund(300)).await.unwrap(), AdjustOutcome::Duplicate);
        assert_eq!(taken(client.adjust(refund(500)).await.unwrap()), 200, "the running total grew by 200");
        // A dispute of the whole payment takes only what is left.
        let dispute = Adjustment {
            id: "dispute:dp_1".into(),
            payment_id: "pi_1".into(),
            reason: "dispute".into(),
            amount: AdjustAmount::Units(1_000),
            note: Some("fraudulent".into()),
        };
        assert_eq!(taken(client.adjust(dispute).await.unwrap()), 500);
        assert_eq!(client.adjust(refund(900)).await.unwrap(), AdjustOutcome::Nothing);
        let unknown = Adjustment { payment_id: "pi_other".into(), ..refund(100) };
        assert_eq!(client.adjust(unknown).await.unwrap(), AdjustOutcome::UnknownPayment);
        assert_eq!(money_now(&client).await.credited_units, 0);
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
        let recomputed = store.ledger.recompute("acct").unwrap();
        assert_eq!((recomputed.credited_units, recomputed.credits), (0, 4));
    }

    /// A ledger that restarts (a failed commit, a failure in a handler) keeps the holds of
    /// requests still in flight: the restarted one does not lend the same money out again.
    #[tokio::test]
    async fn holds_outlive_a_restart_of_the_ledger() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let holds = SharedHolds::default();
        let start = || async {
            let actor = LedgerActor { store: store.clone(), holds: holds.clone() };
            let (actor, _) = Actor::spawn(None, actor, ()).await.unwrap();
            registry.register(NAME.to_owned(), ChildRef::of(&actor));
            actor
        };
        let reserve = |amount_units: i64, budget: Option<i64>| {
            client.reserve(ReserveRequest {
                account_id: "acct".into(),
                metered: true,
                amount_units,
                budget: budget.map(|units| ("ws".to_owned(), units)),
            })
        };
        let first = start().await;
        client.credit(payment("pi_1", 1_000), DEFAULT_CREDIT_TIMEOUT).await.unwrap();
        let in_flight = reserve(800, Some(900)).await.unwrap().unwrap();
        let lost = reserve(100, None).await.unwrap().unwrap();
        first.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
        // Its request ends while no ledger runs: the release message goes nowhere.
        drop(lost);

        let second = start().await;
        assert!(reserve(300, None).await.unwrap().is_err(), "the 800 still held leaves 200");
        assert!(reserve(200, None).await.unwrap().is_ok(), "the lost release's 100 is free again");
        assert!(
            matches!(reserve(150, Some(900)).await.unwrap(), Err(Refusal::BudgetExceeded { .. })),
            "and the budget still counts the 800"
        );
        drop(in_flight);
        assert!(reserve(300, None).await.unwrap().is_ok(), "released through the new ledger");
        second.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    }

    #[tokio::test]
    async fn reservations_are_refused_on_the_balance_and_on_the_workspace_budget() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        let reserve = |amount_units: i64, budget: Option<i64>| {
            client.reserve(ReserveRequest {
                account_id: "acct".into(),
                metered: true,
                amount_units,
                budget: budget.map(|units| ("ws".to_owned(), units)),
            })
        };
        let refusal = |answer: Result<HoldGuard, Refusal>| answer.err();
        assert_eq!(
            refusal(reserve(1, None).await.unwrap()),
            Some(Refusal::BillingRequired { balance_units: 0, required_units: 1 }),
            "an empty balance covers nothing"
        );
        client.credit(payment("pi_1", 1_000), DEFAULT_CREDIT_TIMEOUT).await.unwrap();
        let held = reserve(600, None).await.unwrap().unwrap();
        assert_eq!(
            refusal(reserve(600, None).await.unwrap()),
            Some(Refusal::BillingRequired { balance_units: 1_000, required_units: 600 }),
            "what other requests hold is not available"
        );
        drop(held);
        assert_eq!(
            refusal(reserve(600, Some(500)).await.unwrap()),
            Some(Refusal::BudgetExceeded { budget_units: 500, spent_units: 0 })
        );
        assert!(reserve(400, Some(500)).await.unwrap().is_ok());
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    }

    /// A workspace's spend is counted from its first row, not from when a budget first asks:
    /// the rollups a month is loaded from lack the rows not yet committed.
    #[tokio::test]
    async fn a_budget_set_right_after_spending_counts_the_rows_not_yet_committed() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = spawn_standalone(store.clone(), &registry).await.unwrap();
        client.credit(payment("pi_1", 10_000), DEFAULT_CREDIT_TIMEOUT).await.unwrap();
        let row = UsageRow { workspace_slug: Some("ws".into()), ..usage_row("spent") };
        client.settle(None, row).await.unwrap();
        // At once, within the group commit window: the row is logged, not in the rollups.
        let refused = client
            .reserve(ReserveRequest {
                account_id: "acct".into(),
                metered: true,
                amount_units: 1,
                budget: Some(("ws".into(), 110)),
            })
            .await
            .unwrap()
            .err();
        assert_eq!(refused, Some(Refusal::BudgetExceeded { budget_units: 110, spent_units: 110 }));
        assert_eq!(client.month_spend("acct", "ws").await.unwrap(), 110);
        ledger.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    }

    #[tokio::test]
    async fn a_ledger_that_is_not_running_is_unavailable_and_errors_map_to_engine_errors() {
        let registry = Registry::default();
        let client = LedgerClient::new(registry.clone());
        let err = client.credit(payment("pi_1", 1_000), Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, LedgerError::Unavailable), "{err:?}");
        match crate::error::EngineError::from(err) {
            crate::error::EngineError::Unavailable(message) => {
                assert_eq!(message, "the ledger is restarting; retry shortly")
            }
            other => panic!("{other:?}"),
        }
        let storage = LedgerError::from(StorageError::Conflict);
        match crate::error::EngineError::from(storage) {
            crate::error::EngineError::Internal(detail) => assert_eq!(detail, StorageError::Conflict.to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn months_and_their_first_days() {
        // 2026-11-28T23:39:56Z
        let us = 1_795_909_196_000_000;
        let month = month_of(us);
        assert_eq!(month, 2026 * 12 + 10);
        let first = month_first_day(month);
        let date = time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap() + time::Duration::days(first);
        assert_eq!((date.year(), date.month(), date.day()), (2026, time::Month::November, 1));
    }
}
