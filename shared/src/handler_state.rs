//! The state a service's handlers share: its services behind one reference count.
//!
//! axum clones the state several times for every request (the route's boxed service,
//! `HandlerService::call`, the `State` extractor). A state made of one `Arc` per service pays one
//! atomic increment and decrement per service for each of those clones, on cache lines every
//! runtime worker writes; behind one `Arc`, each clone is one.

use crate::auth::extract::Security;
use axum::extract::FromRef;
use std::ops::Deref;
use std::sync::Arc;

/// A service's handler state: `services` behind one `Arc`, reached through `Deref`.
#[derive(Debug)]
pub struct HandlerState<T>(Arc<T>);

impl<T> HandlerState<T> {
    pub fn new(services: T) -> Self {
        Self(Arc::new(services))
    }
}

impl<T> Clone for HandlerState<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Deref for HandlerState<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Services that hold the security pipeline's state, which the `Auth` extractor takes.
pub trait WithSecurity {
    fn security(&self) -> &Arc<Security>;
}

impl<T: WithSecurity> FromRef<HandlerState<T>> for Arc<Security> {
    fn from_ref(state: &HandlerState<T>) -> Self {
        Arc::clone(state.security())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counted(Arc<()>);

    #[test]
    fn a_clone_shares_the_services_instead_of_cloning_them() {
        let inner = Arc::new(());
        let state = HandlerState::new(Counted(Arc::clone(&inner)));
        let clones: Vec<_> = (0..3).map(|_| state.clone()).collect();
        assert_eq!(
            Arc::strong_count(&inner),
            2,
            "the service's own count is untouched"
        );
        assert!(clones.iter().all(|c| Arc::ptr_eq(&c.0, &state.0)));
        assert!(Arc::ptr_eq(&clones[0].0.0, &inner));
    }
}
