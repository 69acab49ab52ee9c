//! `ledger`: the single writer of usage rows. Rows arrive as messages and reach disk in
//! batches (group commit): the first row of a batch schedules a flush a few milliseconds
//! later, and everything that arrived by then is written and fsynced together.

use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;
use tokaroo_storage::{records::UsageRow, Store};

use crate::{
    inspect::Inspection,
    supervisor::{BoxFuture, ChildSpec},
};

pub const NAME: &str = "ledger";
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);

pub enum LedgerMsg {
    Record(Box<UsageRow>),
    /// Writes what is pending now; replies once it is durable.
    Flush(Option<RpcReplyPort<()>>),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

#[derive(Default)]
pub struct LedgerState {
    pending: Vec<UsageRow>,
    flush_scheduled: bool,
    rows_written: u64,
    batches: u64,
    last_error: Option<String>,
}

pub struct LedgerActor {
    store: Store,
}

impl LedgerActor {
    async fn flush(&self, state: &mut LedgerState) -> Result<(), ActorProcessingErr> {
        state.flush_scheduled = false;
        if state.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut state.pending);
        let items: Vec<_> =
            rows.into_iter().map(|r| ((r.account_id.clone(), r.created_at_ms, r.id.clone()), r)).collect();
        match self.store.usage.insert_batch(&items) {
            Ok(()) => {
                self.store.flush().await?;
                state.rows_written += items.len() as u64;
                state.batches += 1;
                Ok(())
            }
            Err(e) => {
                // Keep the rows: a later flush retries them.
                state.last_error = Some(e.to_string());
                state.pending.extend(items.into_iter().map(|(_, r)| r));
                Err(e.into())
            }
        }
    }
}

impl Actor for LedgerActor {
    type Msg = LedgerMsg;
    type State = LedgerState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<LedgerMsg>, _: ()) -> Result<LedgerState, ActorProcessingErr> {
        Ok(LedgerState::default())
    }

    async fn post_stop(&self, _me: ActorRef<LedgerMsg>, state: &mut LedgerState) -> Result<(), ActorProcessingErr> {
        self.flush(state).await
    }

    async fn handle(
        &self,
        me: ActorRef<LedgerMsg>,
        msg: LedgerMsg,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LedgerMsg::Record(row) => {
                state.pending.push(*row);
                if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    me.send_after(GROUP_COMMIT_WINDOW, || LedgerMsg::Flush(None));
                }
            }
            LedgerMsg::Flush(reply) => {
                let result = self.flush(state).await;
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                result?;
            }
            LedgerMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "pending_rows": state.pending.len(),
                    "rows_written": state.rows_written,
                    "batches": state.batches,
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
}

impl ChildSpec for LedgerSpec {
    fn name(&self) -> String {
        NAME.to_owned()
    }
    fn kind(&self) -> &'static str {
        "ledger"
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<Result<ActorCell, SpawnErr>> {
        let actor = LedgerActor { store: self.store.clone() };
        Box::pin(async move {
            let (actor_ref, _) = Actor::spawn_linked(Some(NAME.to_owned()), actor, (), supervisor).await?;
            Ok(actor_ref.get_cell())
        })
    }
}

/// Hands a row to the ledger; when the ledger is restarting, writes it directly so no
/// served request goes unrecorded.
pub fn record(store: &Store, row: UsageRow) {
    match ActorRef::<LedgerMsg>::where_is(NAME) {
        Some(ledger) => {
            if let Err(ractor::MessagingErr::SendErr(LedgerMsg::Record(row))) =
                ledger.cast(LedgerMsg::Record(Box::new(row)))
            {
                write_directly(store, *row);
            }
        }
        None => write_directly(store, row),
    }
}

fn write_directly(store: &Store, row: UsageRow) {
    if let Err(error) = store.usage.insert(&(row.account_id.as_str(), row.created_at_ms, row.id.as_str()), &row) {
        tracing::error!(%error, row = %row.id, "could not record a usage row");
    }
}

/// Waits until every row handed to the ledger so far is on disk.
pub async fn flush() {
    if let Some(ledger) = ActorRef::<LedgerMsg>::where_is(NAME) {
        let _ = ledger.call(|r| LedgerMsg::Flush(Some(r)), Some(Duration::from_secs(10))).await;
    }
}
