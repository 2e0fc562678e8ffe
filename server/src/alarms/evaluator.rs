//! The evaluator: while this server holds the lease, due alarms are evaluated at each period
//! boundary and their state changes recorded (history, outbox, state).

use super::*;

impl AlarmService {
    async fn load(&self, cache: &mut DocCache) -> Result<BTreeMap<String, TenantView>> {
        let docs = cache.refresh(&self.control).await?;
        let mut out = BTreeMap::new();
        for (tenant, kinds) in docs {
            let mut view = TenantView::default();
            for v in kinds.get(&Doc::Alarm).into_iter().flatten() {
                if let Ok(d) = serde_json::from_value::<AlarmDoc>(v.clone()) {
                    view.alarms.insert(d.definition.alarm_name.clone(), d);
                }
            }
            for v in kinds.get(&Doc::State).into_iter().flatten() {
                if let Ok(s) = serde_json::from_value::<StateDoc>(v.clone()) {
                    view.states.insert(s.alarm_name.clone(), s);
                }
            }
            for v in kinds.get(&Doc::Filter).into_iter().flatten() {
                if let Ok(f) = serde_json::from_value::<MetricFilter>(v.clone()) {
                    view.filters.push(f);
                }
            }
            out.insert(tenant, view);
        }
        Ok(out)
    }

    pub(super) async fn evaluate_loop(&self, stop: CancellationToken) {
        let delay = self.config.delay.as_millis() as i64;
        let mut next_end = (now_ms() - delay).div_euclid(STEP_MS) * STEP_MS + STEP_MS;
        let mut cache = DocCache::default();
        let mut view = BTreeMap::new();
        let mut loaded_at: Option<tokio::time::Instant> = None;
        let mut lease_at: Option<tokio::time::Instant> = None;
        let renew = self.config.lease_ttl / 3;
        loop {
            if lease_at.is_none_or(|t| t.elapsed() >= renew) {
                let held = self.lease.acquire().await;
                if held != self.is_evaluator() {
                    info!(held, "alarm evaluator lease changed hands");
                }
                self.holding.store(held, Ordering::Relaxed);
                lease_at = Some(tokio::time::Instant::now());
                if held {
                    self.outbox_wake.notify_one();
                }
            }
            let held = self.is_evaluator();
            if held && loaded_at.is_none_or(|t| t.elapsed() >= self.config.refresh) {
                match self.load(&mut cache).await {
                    Ok(v) => view = v,
                    Err(e) => warn!(error = %e, "cannot reload alarm definitions"),
                }
                loaded_at = Some(tokio::time::Instant::now());
            }
            let now = now_ms();
            if now >= next_end + delay {
                if held {
                    self.evaluate_boundary(&mut view, next_end).await;
                }
                next_end += STEP_MS;
                // After a long pause (suspended host, slow storage), skip to the latest boundary.
                let latest = (now - delay).div_euclid(STEP_MS) * STEP_MS;
                if next_end < latest {
                    next_end = latest;
                }
                continue;
            }
            let until_tick = Duration::from_millis((next_end + delay - now).max(1) as u64);
            let sleep = until_tick.min(renew).min(self.config.refresh);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => { loaded_at = None; }
            }
        }
    }

    async fn evaluate_boundary(&self, view: &mut BTreeMap<String, TenantView>, end_ms: i64) {
        let started = std::time::Instant::now();
        if end_ms % 60_000 == 0 {
            self.emit_defaults(view, end_ms - defaults::CLOSE_AFTER_MS)
                .await;
        }
        self.evaluate_tenants(view, end_ms).await;
        self.metrics
            .alarm_boundary_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    async fn evaluate_tenants(&self, view: &mut BTreeMap<String, TenantView>, end_ms: i64) {
        for (tenant, t) in view.iter_mut() {
            let due: Vec<&AlarmDoc> = t
                .alarms
                .values()
                .filter(|a| a.definition.period < 60 || end_ms % 60_000 == 0)
                .collect();
            if due.is_empty() {
                continue;
            }
            let jobs: Vec<(AlarmDefinition, StateDoc, Vec<MetricFilter>)> =
                due.into_iter()
                    .map(|a| {
                        let def = &a.definition;
                        let current =
                            t.states.get(&def.alarm_name).cloned().unwrap_or_else(|| {
                                StateDoc::initial(&def.alarm_name, a.created_ms)
                            });
                        let matching = t
                            .filters
                            .iter()
                            .filter(|f| {
                                def.query.is_none()
                                    && f.transformation().is_some_and(|tr| {
                                        Some(&tr.metric_namespace) == def.namespace.as_ref()
                                            && Some(&tr.metric_name) == def.metric_name.as_ref()
                                    })
                            })
                            .cloned()
                            .collect();
                        (def.clone(), current, matching)
                    })
                    .collect();
            // Alarms in one namespace that differ only in metric name and dimension values share
            // one query.
            let mut singles = Vec::new();
            let mut groups: BTreeMap<String, Vec<(AlarmDefinition, StateDoc)>> = BTreeMap::new();
            for (def, current, matching) in jobs {
                match evaluate::group_key(&def) {
                    Some(k) if matching.is_empty() => {
                        groups.entry(k).or_default().push((def, current));
                    }
                    _ => singles.push((def, current, matching)),
                }
            }
            let mut work: Vec<futures::future::BoxFuture<'_, Vec<Outcome>>> = Vec::new();
            for (_, group) in groups {
                if group.len() == 1 {
                    let (def, current) = group.into_iter().next().expect("one member");
                    singles.push((def, current, Vec::new()));
                    continue;
                }
                let engine = self.engine.clone();
                let tenant = tenant.clone();
                work.push(Box::pin(async move {
                    let members: Vec<(&AlarmDefinition, AlarmState)> =
                        group.iter().map(|(d, c)| (d, c.state)).collect();
                    let results =
                        evaluate::evaluate_group(&engine, &tenant, &members, end_ms).await;
                    group
                        .into_iter()
                        .zip(results)
                        .map(|((d, c), r)| (d, c, r))
                        .collect()
                }));
            }
            for (def, current, matching) in singles {
                let engine = self.engine.clone();
                let tenant = tenant.clone();
                work.push(Box::pin(async move {
                    let refs: Vec<&MetricFilter> = matching.iter().collect();
                    let result =
                        evaluate::evaluate(&engine, &tenant, &def, &refs, current.state, end_ms)
                            .await;
                    vec![(def, current, result)]
                }));
            }
            let results: Vec<Outcome> = futures::stream::iter(work)
                .buffer_unordered(EVALUATION_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .collect();
            let now = now_ms();
            let mut changes = Vec::new();
            for (def, current, result) in results {
                self.metrics.alarm_evaluations.inc();
                let end_key = end_ms.to_string();
                match result {
                    Ok(ev) => {
                        let Some(decision) = ev.decision else {
                            continue;
                        };
                        if decision.state != current.state {
                            let reason = decision.reason(&ev.rule, &ev.points, current.state);
                            let data = decision.reason_data(
                                &ev.rule,
                                &ev.points,
                                &def.statistic_name(),
                                def.period,
                                now,
                            );
                            changes.push(transition_change(
                                &def,
                                &current,
                                decision.state,
                                reason,
                                data,
                                now,
                                None,
                                &[&end_key],
                                tenant,
                            ));
                        } else if current.evaluation_state.is_some() {
                            changes.push(evaluation_state_change(def, &current, None, None, now));
                        }
                    }
                    Err(e) => {
                        self.metrics.alarm_evaluation_failures.inc();
                        debug!(tenant, alarm = %def.alarm_name, error = %e, "alarm evaluation failed");
                        // A failure never counts as OK: an OK alarm can no longer vouch for
                        // itself; an ALARM is not resolved without evidence.
                        let target = if current.state == AlarmState::Ok {
                            AlarmState::InsufficientData
                        } else {
                            current.state
                        };
                        let reason = format!("Evaluation failed: {e}");
                        if target != current.state {
                            changes.push(transition_change(
                                &def,
                                &current,
                                target,
                                reason,
                                json!({"version": "1.0", "error": e}),
                                now,
                                Some("EVALUATION_ERROR"),
                                &[&end_key],
                                tenant,
                            ));
                        } else if current.evaluation_state.is_none() {
                            changes.push(evaluation_state_change(
                                def,
                                &current,
                                Some("EVALUATION_ERROR"),
                                Some(reason),
                                now,
                            ));
                        }
                    }
                }
            }
            if changes.is_empty() {
                continue;
            }
            let states: Vec<StateDoc> = changes.iter().map(|c| c.state.clone()).collect();
            let transitions = changes.iter().filter(|c| c.transition.is_some()).count();
            match self.apply(tenant, changes, Some(end_ms)).await {
                Ok(()) => {
                    self.metrics.alarm_transitions.add(transitions as u64);
                    for s in states {
                        t.states.insert(s.alarm_name.clone(), s);
                    }
                }
                Err(e) => {
                    warn!(tenant, error = %e, "cannot record alarm state changes; the boundary is evaluated again")
                }
            }
        }
    }
}

/// A change of the evaluation state only (the alarm's state stays, nothing is notified).
fn evaluation_state_change(
    def: AlarmDefinition,
    current: &StateDoc,
    evaluation_state: Option<&str>,
    reason: Option<String>,
    now: i64,
) -> Change {
    let mut state = current.clone();
    state.evaluation_state = evaluation_state.map(str::to_string);
    if let Some(r) = reason {
        state.reason = r;
    }
    state.updated_ms = now;
    Change {
        def,
        state,
        transition: None,
    }
}

/// A change of `current` to `new`.
#[allow(clippy::too_many_arguments)]
pub(super) fn transition_change(
    def: &AlarmDefinition,
    current: &StateDoc,
    new: AlarmState,
    reason: String,
    reason_data: Value,
    now: i64,
    evaluation_state: Option<&str>,
    key: &[&str],
    tenant: &str,
) -> Change {
    let mut reason: String = reason.chars().take(1023).collect();
    if reason.is_empty() {
        reason = "(no reason given)".into();
    }
    let state = StateDoc {
        alarm_name: def.alarm_name.clone(),
        state: new,
        reason: reason.clone(),
        reason_data: reason_data.clone(),
        updated_ms: now,
        transitioned_ms: if new == current.state {
            current.transitioned_ms
        } else {
            now
        },
        evaluation_state: evaluation_state.map(str::to_string),
    };
    let transition = (new != current.state).then(|| {
        let t = Transition {
            old_state: current.state,
            old_reason: current.reason.clone(),
            old_ms: current.transitioned_ms,
            new_state: new,
            reason,
            reason_data,
            at_ms: now,
        };
        let mut parts = vec![tenant, def.alarm_name.as_str(), new.as_str()];
        parts.extend_from_slice(key);
        (t, parts.join("/"))
    });
    Change {
        def: def.clone(),
        state,
        transition,
    }
}
