//! Node setup on disk: the first admin key can never be lost, and names that would let two
//! owners' idempotency keys collide, or reach the operator's accounts, are refused.

use tally_service::{Node, NodeConfig, Role, ServiceError};

#[tokio::test]
async fn the_first_admin_key_survives_a_crash_between_commit_and_rename() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::new(dir.path().join("node"));
    let (node, admin) = Node::open(&config).await.expect("first start");
    let admin = admin
        .expect("first start makes an admin key")
        .expose()
        .clone();
    let path = node.files().admin_key();
    assert_eq!(
        std::fs::read_to_string(&path).expect("admin.key").trim(),
        admin
    );
    node.store().close().await;

    // The crash left the committed key in the pending file only.
    std::fs::rename(&path, path.with_extension("key.pending")).expect("simulate");
    let (node, again) = Node::open(&config).await.expect("restart");
    assert!(again.is_none(), "no second admin key");
    assert_eq!(
        std::fs::read_to_string(&path).expect("recovered").trim(),
        admin
    );
    node.authenticate(&admin)
        .await
        .expect("the recovered key works");
    node.store().close().await;

    // An admin.key that belongs to another database is not silently kept or overwritten.
    std::fs::remove_file(dir.path().join("node/tally.db")).expect("drop the database");
    let _ = std::fs::remove_file(dir.path().join("node/tally.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("node/tally.db-shm"));
    match Node::open(&config).await {
        Err(ServiceError::Setup(why)) => assert!(why.contains("admin.key"), "{why}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a stale admin.key must stop the start"),
    }
}

#[tokio::test]
async fn owner_names_cannot_collide_or_reach_the_operator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, admin) = Node::open(&NodeConfig::new(dir.path()))
        .await
        .expect("start");
    let admin = node
        .authenticate(admin.expect("key").expose())
        .await
        .expect("admin");
    for (role, owner) in [
        (Role::Customer, "a:b"),
        (Role::Merchant, "operator"),
        (Role::Customer, "x\0y"),
    ] {
        let r = node.issue_api_key(&admin, role, owner, "").await;
        assert!(
            matches!(r, Err(ServiceError::Invalid { field: "owner", .. })),
            "{owner:?}: {r:?}"
        );
    }
    node.issue_api_key(&admin, Role::Customer, "alice", "")
        .await
        .expect("a plain name is fine");
}
