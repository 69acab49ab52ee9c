//! Request work that runs in a task of its own, so that a client leaving cannot cancel it:
//! the upstream goes on doing (and billing) the work, so the request must still settle its row.

use std::{future::Future, sync::Arc};

use crate::{
    chat::ChatRequest,
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::Charge,
    runtime::Runtime,
    runtime::{
        embeddings::{EmbeddingOutcome, EmbeddingRequest},
        requests::{RequestInfo, ServedChat},
    },
};

/// Runs request work in a task of its own, tracked (`Work::track`) so that shutdown
/// waits for it before the ledger's last commit.
///
/// The one place request work may call `tokio::spawn`: every detached request goes through
/// here, so none can escape shutdown's wait.
pub(crate) fn spawn_request_task<F>(runtime: &Runtime, work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tracked = runtime.work().track();
    #[allow(clippy::disallowed_methods)] // allow-list: request work that outlives its client
    tokio::spawn(async move {
        let _tracked = tracked;
        work.await
    })
}

/// The request's task panicked or was aborted: its answer is lost, not its client's fault.
fn task_ended(error: tokio::task::JoinError) -> EngineError {
    EngineError::Internal(format!("the request's task ended: {error}"))
}

impl Runtime {
    /// Serves a non-streamed chat and settles its usage row, whether or not the caller still
    /// waits for the answer.
    pub async fn serve_chat(
        &self,
        key: Arc<KeyEntry>,
        request: ChatRequest,
        info: RequestInfo,
    ) -> Result<ServedChat, EngineError> {
        let runtime = self.clone();
        spawn_request_task(self, async move { runtime.chat(&key, &request, info).await }).await.map_err(task_ended)?
    }

    /// Generates images and settles their usage row, whether or not the caller still waits.
    pub async fn serve_images(
        &self,
        key: Arc<KeyEntry>,
        request: crate::runtime::images::ImageRequest,
        request_id: Option<String>,
        permit: crate::runtime::media::MediaPermit,
    ) -> Result<crate::runtime::images::ImageOutcome, EngineError> {
        let runtime = self.clone();
        spawn_request_task(self, async move {
            let mut outcome = runtime.images(&key, &request, request_id).await?;
            // Held while the answer is encoded and sent: that is the memory the gate bounds.
            outcome.permit = Some(permit);
            Ok(outcome)
        })
        .await
        .map_err(task_ended)?
    }

    /// Opens speech and settles its usage row; the audio then streams from the provider.
    pub async fn serve_speech(
        &self,
        key: Arc<KeyEntry>,
        request: crate::runtime::speech::SpeechRequest,
        request_id: Option<String>,
        permit: crate::runtime::media::MediaPermit,
    ) -> Result<crate::runtime::speech::SpeechOutcome, EngineError> {
        let runtime = self.clone();
        spawn_request_task(self, async move {
            let mut outcome = runtime.speech(&key, &request, request_id).await?;
            // The account's slot lasts as long as the stream: a tenant's open streams count.
            outcome.audio = crate::runtime::media::holding(outcome.audio, permit.into_slot());
            Ok(outcome)
        })
        .await
        .map_err(task_ended)?
    }

    /// Transcribes and settles its usage row, whether or not the caller still waits.
    pub async fn serve_transcription(
        &self,
        key: Arc<KeyEntry>,
        request: crate::runtime::transcription::TranscriptionRequest,
        request_id: Option<String>,
        permit: crate::runtime::media::MediaPermit,
    ) -> Result<crate::runtime::transcription::TranscriptionOutcome, EngineError> {
        let runtime = self.clone();
        spawn_request_task(self, async move {
            let _permit = permit;
            runtime.transcribe(&key, &request, request_id).await
        })
        .await
        .map_err(task_ended)?
    }

    /// Starts a video job (charged when it completes).
    pub async fn serve_video(
        &self,
        key: Arc<KeyEntry>,
        request: crate::runtime::video::VideoRequest,
        request_id: Option<String>,
        permit: crate::runtime::media::MediaPermit,
    ) -> Result<tokaroo_storage::media::VideoJob, EngineError> {
        let runtime = self.clone();
        spawn_request_task(self, async move {
            let _permit = permit;
            runtime.start_video_job(&key, &request, request_id).await
        })
        .await
        .map_err(task_ended)?
    }

    /// Serves embeddings and settles their usage row, whether or not the caller still waits.
    pub async fn serve_embeddings(
        &self,
        key: Arc<KeyEntry>,
        request: EmbeddingRequest,
        request_id: Option<String>,
    ) -> Result<(EmbeddingOutcome, Charge), EngineError> {
        let runtime = self.clone();
        spawn_request_task(self, async move { runtime.embed(&key, &request, request_id).await })
            .await
            .map_err(task_ended)?
    }
}
