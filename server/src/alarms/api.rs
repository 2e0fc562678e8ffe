//! The alarm API: alarms, metric filters, destinations and history, as the HTTP routes call it.

use super::evaluator::transition_change;
use super::*;

/// CloudWatch's limit of metric filters per log group (the audit trail counts as one).
pub(super) const MAX_FILTERS_PER_GROUP: usize = 100;

impl AlarmService {
    /// Creates or replaces an alarm. A new alarm starts in INSUFFICIENT_DATA; an update keeps
    /// the state. Whether it was created.
    ///
    /// # Errors
    /// A refused definition, storage errors.
    pub async fn put_alarm(&self, tenant: &str, def: AlarmDefinition) -> Result<bool, ApiError> {
        watchtrail_query::alarm::check_query(&def)?;
        let now = now_ms();
        let name = def.alarm_name.clone();
        let existing: Option<AlarmDoc> = self.control.get(tenant, Doc::Alarm, &name).await?;
        let created = existing.is_none();
        let doc = AlarmDoc {
            created_ms: existing.as_ref().map_or(now, |d| d.created_ms),
            updated_ms: now,
            definition: def.clone(),
        };
        self.control.put(tenant, Doc::Alarm, &name, &doc).await?;
        if self
            .control
            .get::<StateDoc>(tenant, Doc::State, &name)
            .await?
            .is_none()
        {
            self.control
                .put(tenant, Doc::State, &name, &StateDoc::initial(&name, now))
                .await?;
        }
        let what = if created { "created" } else { "updated" };
        self.append_history(tenant, &[config_history(&def, what, now)], None)
            .await?;
        self.wake.notify_one();
        Ok(created)
    }

    /// EnableAlarmActions / DisableAlarmActions: every named alarm must exist; each is kept with
    /// its state, its actions switched on or off (a configuration update in its history).
    ///
    /// # Errors
    /// An unknown name (nothing changed), storage errors.
    pub async fn set_actions_enabled(
        &self,
        tenant: &str,
        names: &[&str],
        enabled: bool,
    ) -> Result<(), ApiError> {
        let mut docs = Vec::with_capacity(names.len());
        for n in names {
            docs.push(self.alarm_doc(tenant, n).await?);
        }
        for d in docs {
            if d.definition.actions_enabled != enabled {
                let mut def = d.definition;
                def.actions_enabled = enabled;
                self.put_alarm(tenant, def).await?;
            }
        }
        Ok(())
    }

    async fn alarm_doc(&self, tenant: &str, name: &str) -> Result<AlarmDoc, ApiError> {
        self.control
            .get::<AlarmDoc>(tenant, Doc::Alarm, name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("alarm `{name}` does not exist")))
    }

    /// One alarm with its state, shaped like DescribeAlarms' `MetricAlarms` items.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn describe_alarm(&self, tenant: &str, name: &str) -> Result<Value, ApiError> {
        let doc = self.alarm_doc(tenant, name).await?;
        let state = self
            .control
            .get::<StateDoc>(tenant, Doc::State, name)
            .await?;
        Ok(describe(tenant, &doc, state.as_ref()))
    }

    /// Every alarm of the tenant, optionally only names with `prefix` and in `state`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn describe_alarms(
        &self,
        tenant: &str,
        prefix: Option<&str>,
        state: Option<AlarmState>,
    ) -> Result<Vec<Value>, ApiError> {
        let docs: Vec<AlarmDoc> = self.control.list(tenant, Doc::Alarm).await?;
        let states: HashMap<String, StateDoc> = self
            .control
            .list::<StateDoc>(tenant, Doc::State)
            .await?
            .into_iter()
            .map(|s| (s.alarm_name.clone(), s))
            .collect();
        let mut out: Vec<(String, Value)> = docs
            .iter()
            .filter(|d| prefix.is_none_or(|p| d.definition.alarm_name.starts_with(p)))
            .filter(|d| {
                state.is_none_or(|s| {
                    states
                        .get(&d.definition.alarm_name)
                        .map_or(AlarmState::InsufficientData, |st| st.state)
                        == s
                })
            })
            .map(|d| {
                (
                    d.definition.alarm_name.clone(),
                    describe(tenant, d, states.get(&d.definition.alarm_name)),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    /// Deletes an alarm (its history stays).
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete_alarm(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        let doc = self.alarm_doc(tenant, name).await?;
        self.control.delete(tenant, Doc::Alarm, name).await?;
        self.control.delete(tenant, Doc::State, name).await?;
        self.append_history(
            tenant,
            &[config_history(&doc.definition, "deleted", now_ms())],
            None,
        )
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// SetAlarmState: forces a state until the next evaluation; a change notifies as usual.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn set_state(
        &self,
        tenant: &str,
        name: &str,
        state: AlarmState,
        reason: String,
        reason_data: Value,
    ) -> Result<(), ApiError> {
        let doc = self.alarm_doc(tenant, name).await?;
        let now = now_ms();
        let current = self
            .control
            .get::<StateDoc>(tenant, Doc::State, name)
            .await?
            .unwrap_or_else(|| StateDoc::initial(name, now));
        let change = transition_change(
            &doc.definition,
            &current,
            state,
            reason,
            reason_data,
            now,
            None,
            &["set-state", &now.to_string()],
            tenant,
        );
        self.apply(tenant, vec![change], None).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Creates or replaces a metric filter.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put_filter(&self, tenant: &str, f: &MetricFilter) -> Result<(), ApiError> {
        // The creation time is the server's, and a replaced filter keeps its own: events
        // ingested from then on make its metric.
        let all: Vec<MetricFilter> = self.control.list(tenant, Doc::Filter).await?;
        let same_group = all
            .iter()
            .filter(|o| o.log_group_name == f.log_group_name && o.filter_name != f.filter_name)
            .count();
        if same_group >= MAX_FILTERS_PER_GROUP {
            return Err(ApiError::Invalid(DefinitionError::new(
                "logGroupName",
                format!(
                    "`{}` has {same_group} metric filters already; at most {MAX_FILTERS_PER_GROUP} per log group",
                    f.log_group_name
                ),
            )));
        }
        let existing = all.into_iter().find(|o| o.filter_name == f.filter_name);
        let mut f = f.clone();
        f.creation_time = Some(
            existing
                .and_then(|e| e.creation_time)
                .unwrap_or_else(crate::wal::now_ms),
        );
        self.control
            .put(tenant, Doc::Filter, &f.filter_name, &f)
            .await?;
        self.ingest.filters().invalidate(tenant);
        self.wake.notify_one();
        Ok(())
    }

    /// Every metric filter of the tenant.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_filters(&self, tenant: &str) -> Result<Vec<MetricFilter>, ApiError> {
        let mut v: Vec<MetricFilter> = self.control.list(tenant, Doc::Filter).await?;
        v.sort_by(|a, b| a.filter_name.cmp(&b.filter_name));
        Ok(v)
    }

    /// Deletes a metric filter.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete_filter(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        if !self.control.delete(tenant, Doc::Filter, name).await? {
            return Err(ApiError::NotFound(format!(
                "metric filter `{name}` does not exist"
            )));
        }
        self.ingest.filters().invalidate(tenant);
        self.wake.notify_one();
        Ok(())
    }

    /// Creates or replaces a destination.
    ///
    /// # Errors
    /// A refused destination, storage errors.
    pub async fn put_destination(&self, tenant: &str, d: &Destination) -> Result<(), ApiError> {
        d.validate()?;
        if let Ok(u) = url::Url::parse(&d.url)
            && let Err(reason) = self.config.egress.check_url(&u)
        {
            return Err(ApiError::Invalid(
                watchtrail_query::alarm::DefinitionError {
                    field: "Url".into(),
                    reason,
                },
            ));
        }
        self.control
            .put(tenant, Doc::Destination, &d.name, d)
            .await?;
        Ok(())
    }

    /// Every destination of the tenant, secrets hidden.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_destinations(
        &self,
        tenant: &str,
        admin: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let mut v: Vec<Destination> = self.control.list(tenant, Doc::Destination).await?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v.iter().map(|d| d.redacted(admin)).collect())
    }

    /// Deletes a destination.
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete_destination(&self, tenant: &str, name: &str) -> Result<(), ApiError> {
        if !self.control.delete(tenant, Doc::Destination, name).await? {
            return Err(ApiError::NotFound(format!(
                "destination `{name}` does not exist"
            )));
        }
        Ok(())
    }

    /// DescribeAlarmHistory, newest first, from the `alarm_history` table.
    ///
    /// # Errors
    /// Query errors.
    pub async fn history(
        &self,
        tenant: &str,
        name: Option<&str>,
        item_type: Option<&str>,
        max: usize,
    ) -> Result<Vec<Value>, ApiError> {
        let lit = evaluate::lit;
        let mut conds = vec!["true".to_string()];
        if let Some(n) = name {
            conds.push(format!("alarm_name = {}", lit(n)));
        }
        if let Some(t) = item_type {
            conds.push(format!("history_item_type = {}", lit(t)));
        }
        let sql = format!(
            "SELECT alarm_name AS \"AlarmName\", 'MetricAlarm' AS \"AlarmType\", \
             time AS \"Timestamp\", history_item_type AS \"HistoryItemType\", \
             summary AS \"HistorySummary\", history_data AS \"HistoryData\" \
             FROM alarm_history WHERE {} ORDER BY time DESC LIMIT {max}",
            conds.join(" AND ")
        );
        let result = self.engine.collect(tenant, &sql).await?;
        let bytes = watchtrail_query::output::json_rows(&result.batches)?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Server(Error::Internal(e.to_string())))
    }
}
