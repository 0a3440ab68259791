//! The glue stages the service wires between components: processor adapters, exporter
//! fan-out with per-pipeline accounting, and receiver fan-out over pipelines.

use std::collections::HashMap;
use std::sync::Arc;

use crate::component::telemetry::{ReceiverLabels, SelfMetrics};
use crate::component::{
    Ack, BoxFuture, ClientInfo, Consumer, ExportError, Payload, ProcessCtx, Processor, Refused,
};
use crate::exporters::queue::Delivery;

/// Runs an in-place [`Processor`] and hands the (possibly smaller) payload on.
pub struct InlineStage {
    pub name: String,
    pub processor: Arc<dyn Processor>,
    pub next: Arc<dyn Consumer>,
    /// Exporters that `ProcessCtx::divert` may name.
    pub divert_targets: HashMap<String, Arc<ExporterStage>>,
}

impl Consumer for InlineStage {
    fn consume<'a>(
        &'a self,
        mut data: Payload,
        client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<Ack, Refused>> {
        Box::pin(async move {
            let mut ctx = ProcessCtx::new(client);
            match &mut data {
                Payload::Traces(r) => self.processor.process_traces(r, &mut ctx)?,
                Payload::Metrics(r) => self.processor.process_metrics(r, &mut ctx)?,
                Payload::Logs(r) => self.processor.process_logs(r, &mut ctx)?,
            }
            let ProcessCtx {
                rejected,
                reasons,
                diverted,
                ..
            } = ctx;
            for (target, payload) in diverted {
                match self.divert_targets.get(&target) {
                    Some(exp) => {
                        if let Err(e) = exp.send(payload).await {
                            // Diverted data is data we accepted: the client must retry.
                            return Err(Refused {
                                retryable: e.retryable,
                                status: e.status,
                                message: format!("{}: routing to {target} failed: {e}", self.name),
                                retry_after: e.retry_after,
                            });
                        }
                    }
                    None => {
                        tracing::error!(processor = %self.name, exporter = %target, "divert target is not wired; data refused");
                        return Err(Refused::permanent(format!(
                            "{}: route target {target} is not an exporter of this pipeline's service",
                            self.name
                        )));
                    }
                }
            }
            let mut ack = if data.is_empty() {
                Ack::default()
            } else {
                self.next.consume(data, client).await?
            };
            ack.rejected += rejected;
            ack.reasons.extend(reasons);
            Ok(ack)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.next.shutdown()
    }
}

/// One exporter as seen from one pipeline: hands data to the exporter's delivery layer
/// (sending queue and retries), which counts sent, failed and refused items under this
/// pipeline's label and logs failures (never hidden).
pub struct ExporterStage {
    pub exporter_id: String,
    pub pipeline: String,
    pub delivery: Arc<Delivery>,
}

impl ExporterStage {
    pub async fn send(&self, data: Payload) -> Result<(), ExportError> {
        self.delivery.submit(&self.pipeline, data).await
    }
}

/// The end of a pipeline: sends to every exporter (clones for all but the last).
pub struct ExporterFanout {
    pub exporters: Vec<Arc<ExporterStage>>,
}

impl Consumer for ExporterFanout {
    fn consume<'a>(
        &'a self,
        data: Payload,
        _client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<Ack, Refused>> {
        Box::pin(async move {
            let mut first_err: Option<ExportError> = None;
            let last = self.exporters.len().saturating_sub(1);
            let mut data = Some(data);
            for (i, exp) in self.exporters.iter().enumerate() {
                let payload = if i == last { data.take() } else { data.clone() };
                let Some(payload) = payload else { break };
                if let Err(e) = exp.send(payload).await {
                    first_err.get_or_insert(e);
                }
            }
            match first_err {
                None => Ok(Ack::default()),
                Some(e) => Err(Refused {
                    retryable: e.retryable,
                    status: e.status,
                    message: format!("export failed: {e}"),
                    retry_after: e.retry_after,
                }),
            }
        })
    }
}

/// One source's view of the pipelines for one signal (a receiver's, or tollgate's own
/// metrics source for processors that emit metrics): clones for all but the last pipeline,
/// counts accepted and refused items per pipeline, and folds the outcomes.
pub struct Fanout {
    /// The receiver id (or `tollgate` for the metrics source), the `receiver` metric label.
    pub source: String,
    pub pipelines: Vec<(String, Arc<dyn Consumer>)>,
    pub metrics: Arc<SelfMetrics>,
}

impl Consumer for Fanout {
    fn consume<'a>(
        &'a self,
        data: Payload,
        client: &'a Arc<ClientInfo>,
    ) -> BoxFuture<'a, Result<Ack, Refused>> {
        Box::pin(self.fan_out(data, client))
    }
}

impl Fanout {
    async fn fan_out(&self, mut data: Payload, client: &Arc<ClientInfo>) -> Result<Ack, Refused> {
        let signal = data.signal();
        // Items with wrong-length ids are refused on their own, before any pipeline sees
        // them: batched with other clients' data they would make a checking backend refuse
        // everything.
        let (bad_ids, bad_reasons) = crate::receivers::ids::remove_bad_ids(&mut data);
        if bad_ids > 0 {
            for (pipeline, _) in &self.pipelines {
                self.metrics
                    .receiver_refused
                    .get(signal)
                    .get_or_create(&ReceiverLabels {
                        receiver: self.source.clone(),
                        pipeline: pipeline.clone(),
                    })
                    .inc_by(bad_ids);
            }
            if data.item_count() == 0 {
                return Ok(Ack {
                    rejected: bad_ids,
                    reasons: bad_reasons,
                });
            }
        }
        let n = data.item_count();
        let last = self.pipelines.len().saturating_sub(1);
        let mut data = Some(data);
        let mut ack = Ack::default();
        let mut err: Option<Refused> = None;
        for (i, (pipeline, consumer)) in self.pipelines.iter().enumerate() {
            let payload = if i == last { data.take() } else { data.clone() };
            let Some(payload) = payload else { break };
            let labels = ReceiverLabels {
                receiver: self.source.clone(),
                pipeline: pipeline.clone(),
            };
            match consumer.consume(payload, client).await {
                Ok(a) => {
                    let rejected = a.rejected.min(n);
                    self.metrics
                        .receiver_accepted
                        .get(signal)
                        .get_or_create(&labels)
                        .inc_by(n - rejected);
                    if rejected > 0 {
                        self.metrics
                            .receiver_refused
                            .get(signal)
                            .get_or_create(&labels)
                            .inc_by(rejected);
                    }
                    ack.merge(a);
                }
                Err(e) => {
                    self.metrics
                        .receiver_refused
                        .get(signal)
                        .get_or_create(&labels)
                        .inc_by(n);
                    err.get_or_insert(e);
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => {
                ack.rejected += bad_ids;
                ack.reasons.extend(bad_reasons);
                Ok(ack)
            }
        }
    }
}
