//! openraft's own storage conformance suite, run against our log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use strom_controller::raft::log_store::LogStore;
use strom_controller::raft::state_machine::StateMachineStore;
use strom_controller::raft::{NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let log = LogStore::open(&dir.path().join("raft")).map_err(|e| openraft::StorageIOError::write(&e))?;
        let (sm, _) = StateMachineStore::open(&dir.path().join("state"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
