//! The outbox worker: pending notifications are delivered, retried with backoff, and each
//! attempt recorded in `webhook_deliveries`.

use super::*;

impl AlarmService {
    pub(super) async fn deliver_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut queue: HashMap<String, OutboxEntry> = HashMap::new();
        let mut loaded_at: Option<tokio::time::Instant> = None;
        loop {
            if !self.is_evaluator() {
                queue.clear();
                loaded_at = None;
            } else {
                if loaded_at.is_none_or(|t| t.elapsed() >= self.config.refresh) {
                    match self.load_outbox().await {
                        Ok(entries) => {
                            for e in entries {
                                queue.entry(e.id.clone()).or_insert(e);
                            }
                        }
                        Err(e) => warn!(error = %e, "cannot read the notification outbox"),
                    }
                    loaded_at = Some(tokio::time::Instant::now());
                }
                let now = now_ms();
                let due: Vec<OutboxEntry> = queue
                    .values()
                    .filter(|e| e.next_attempt_ms <= now)
                    .cloned()
                    .collect();
                if !due.is_empty() {
                    let results: Vec<_> = futures::stream::iter(due)
                        .map(|e| {
                            let this = Arc::clone(&self);
                            async move { this.attempt(e).await }
                        })
                        .buffer_unordered(DELIVERY_CONCURRENCY)
                        .collect()
                        .await;
                    let mut rows: BTreeMap<String, Vec<DeliveryRow>> = BTreeMap::new();
                    for (entry, row, keep) in results {
                        if row.outcome == "delivered" {
                            self.metrics.notifications_delivered.inc();
                        } else {
                            self.metrics.notification_failures.inc();
                        }
                        rows.entry(entry.tenant.clone()).or_default().push(row);
                        if keep {
                            queue.insert(entry.id.clone(), entry);
                        } else {
                            queue.remove(&entry.id);
                        }
                    }
                    for (tenant, rows) in rows {
                        let actions: Vec<HistoryRow> =
                            rows.iter().filter_map(action_history).collect();
                        if let Err(e) = self.append_history(&tenant, &actions, None).await {
                            warn!(tenant, error = %e, "cannot record alarm actions in the history");
                        }
                        let appended = match history::deliveries_batch(&rows) {
                            Ok(b) => self
                                .storage
                                .append_batch(&tenant, TableKind::WebhookDeliveries, &b)
                                .await
                                .map(|_| ())
                                .map_err(Error::from),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = appended {
                            warn!(tenant, error = %e, "cannot record webhook deliveries");
                        }
                    }
                    continue;
                }
            }
            let next = queue.values().map(|e| e.next_attempt_ms).min();
            let sleep = next
                .map(|t| Duration::from_millis((t - now_ms()).clamp(10, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                () = self.outbox_wake.notified() => { loaded_at = None; }
            }
        }
    }

    async fn load_outbox(&self) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for tenant in self.control.tenants().await? {
            out.extend(
                self.control
                    .list::<OutboxEntry>(&tenant, Doc::Outbox)
                    .await?,
            );
        }
        Ok(out)
    }

    /// One delivery attempt: the entry (updated), its row, and whether it stays queued.
    async fn attempt(&self, mut entry: OutboxEntry) -> (OutboxEntry, DeliveryRow, bool) {
        let started = std::time::Instant::now();
        let dest_name = webhook::action_destination(&entry.action).to_string();
        let dest = self
            .control
            .get::<Destination>(&entry.tenant, Doc::Destination, &dest_name)
            .await;
        entry.attempts += 1;
        let mut row = DeliveryRow {
            at_ms: now_ms(),
            delivery_id: entry.id.clone(),
            alarm_name: entry.alarm.alarm_name.clone(),
            destination: entry.action.clone(),
            url: None,
            new_state: entry.transition.new_state.to_string(),
            attempt: entry.attempts as i32,
            outcome: "delivered",
            status_code: None,
            error: None,
            duration_ms: 0,
        };
        let attempt = match dest {
            Ok(Some(d)) => {
                // Tables are read with `read` keys: no credential from the URL goes in.
                row.url = Some(webhook::redacted_url(&d.url));
                match url::Url::parse(&d.url).map(|u| self.config.egress.check_url(&u)) {
                    Ok(Err(why)) => Attempt::Rejected(0, why),
                    _ => webhook::send(&self.http, &d, &entry, self.config.webhook_timeout).await,
                }
            }
            Ok(None) => {
                row.outcome = "undeliverable";
                row.error = Some(format!("no destination named `{dest_name}`"));
                let _ = self
                    .control
                    .delete(&entry.tenant, Doc::Outbox, &entry.id)
                    .await;
                row.duration_ms = started.elapsed().as_millis() as i64;
                return (entry, row, false);
            }
            Err(e) => Attempt::Retry(None, format!("cannot read destination `{dest_name}`: {e}")),
        };
        row.at_ms = now_ms();
        row.duration_ms = started.elapsed().as_millis() as i64;
        let keep = match attempt {
            Attempt::Delivered(code) => {
                row.status_code = Some(i32::from(code));
                false
            }
            Attempt::Rejected(code, why) => {
                row.outcome = "rejected";
                row.status_code = Some(i32::from(code));
                row.error = Some(why);
                false
            }
            Attempt::Retry(code, why) => {
                row.status_code = code.map(i32::from);
                row.error = Some(why);
                let age = now_ms() - entry.created_ms;
                if age >= self.config.webhook_max_age.as_millis() as i64 {
                    row.outcome = "expired";
                    false
                } else {
                    row.outcome = "retrying";
                    let wait = webhook::backoff(
                        &entry.id,
                        entry.attempts,
                        self.config.retry_base,
                        self.config.retry_max,
                    );
                    entry.next_attempt_ms = now_ms() + wait.as_millis() as i64;
                    if let Err(e) = self
                        .control
                        .put(&entry.tenant, Doc::Outbox, &entry.id, &entry)
                        .await
                    {
                        warn!(error = %e, "cannot update a notification in the outbox");
                    }
                    true
                }
            }
        };
        if !keep
            && let Err(e) = self
                .control
                .delete(&entry.tenant, Doc::Outbox, &entry.id)
                .await
        {
            warn!(error = %e, "cannot remove a finished notification from the outbox");
        }
        (entry, row, keep)
    }
}
