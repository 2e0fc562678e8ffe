//! One memory budget for every query of the engine, beside each query's own limit.
//!
//! Each query has a DataFusion memory pool of its own (`memory_limit`); `SharedBudgetPool`
//! wraps it so that every reservation also counts against the engine's [`ServerMemoryBudget`].
//! A query that would take the budget past its size fails with `ResourcesExhausted`, like a
//! query past its own limit, so that many queries of many tenants at once cannot together take
//! more memory than the operator gave queries.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The memory every query of an engine may hold together.
#[derive(Debug)]
pub struct ServerMemoryBudget {
    size: usize,
    used: AtomicUsize,
}

impl ServerMemoryBudget {
    /// A budget of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes reserved now by all queries.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget's size.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// A query's own pool whose reservations also count against the server's budget.
#[derive(Debug)]
pub(crate) struct SharedBudgetPool {
    query: Arc<dyn MemoryPool>,
    server: Arc<ServerMemoryBudget>,
}

impl SharedBudgetPool {
    pub(crate) fn new(query: Arc<dyn MemoryPool>, server: Arc<ServerMemoryBudget>) -> Self {
        Self { query, server }
    }
}

impl fmt::Display for SharedBudgetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} within a server budget of {} bytes ({} in use)",
            self.query,
            self.server.size,
            self.server.used()
        )
    }
}

impl MemoryPool for SharedBudgetPool {
    fn name(&self) -> &str {
        "watchtrail-shared-budget"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.query.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.query.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.server.used.fetch_add(additional, Ordering::Relaxed);
        self.query.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.server.used.fetch_sub(shrink, Ordering::Relaxed);
        self.query.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let size = self.server.size;
        self.server
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let new = used.checked_add(additional)?;
                (new <= size).then_some(new)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the server's memory budget for all queries ({size} bytes, \
                     --query-memory-budget) has {} bytes left, and this query asked for {additional} more; \
                     retry when other queries have finished",
                    size.saturating_sub(used)
                ))
            })?;
        if let Err(e) = self.query.try_grow(reservation, additional) {
            self.server.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.query.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.query.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;

    #[test]
    fn a_query_within_its_own_limit_is_still_stopped_by_the_shared_budget() {
        let server = Arc::new(ServerMemoryBudget::new(100));
        let a: Arc<dyn MemoryPool> = Arc::new(SharedBudgetPool::new(
            Arc::new(GreedyMemoryPool::new(80)),
            Arc::clone(&server),
        ));
        let b: Arc<dyn MemoryPool> = Arc::new(SharedBudgetPool::new(
            Arc::new(GreedyMemoryPool::new(80)),
            Arc::clone(&server),
        ));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(70).unwrap();
        // Within b's own 80, but only 30 of the server's 100 are left.
        let e = rb.try_grow(40).unwrap_err().to_string();
        assert!(e.contains("--query-memory-budget"), "{e}");
        assert_eq!(server.used(), 70, "a refused reservation takes nothing");
        rb.try_grow(30).unwrap();
        // Its own limit still applies, and gives the server's share back when it refuses.
        let e = ra.try_grow(20);
        assert!(e.is_err());
        assert_eq!(server.used(), 100);
        drop(ra);
        assert_eq!(server.used(), 30, "freed memory goes back to the budget");
        rb.try_grow(50).unwrap();
        drop(rb);
        assert_eq!(server.used(), 0);
    }
}
