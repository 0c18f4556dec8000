//! Node setup on disk: the first admin key can never be lost, the last one never revoked, and
//! names that would let two
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

/// The operator cannot lock itself out: the last live admin key is not revoked, even when two
/// revocations of the last two race (decided in the database, so on PostgreSQL too).
async fn the_last_admin_key_stays(config: NodeConfig) {
    let (node, admin) = Node::open(&config).await.expect("start");
    let admin = admin.expect("key").expose().clone();
    let first = node.authenticate(&admin).await.expect("admin");
    let last = node.revoke_api_key(&first, first.key_id).await;
    assert!(matches!(last, Err(ServiceError::LastAdminKey)), "{last:?}");
    node.authenticate(&admin)
        .await
        .expect("the only admin key still works");
    // Customer keys come and go freely.
    let (customer, _) = node
        .issue_api_key(&first, Role::Customer, "alice", "c")
        .await
        .expect("customer key");
    node.revoke_api_key(&first, customer.id)
        .await
        .expect("a customer key is revoked");
    for _ in 0..5 {
        let (second, _) = node
            .issue_api_key(&first, Role::Admin, "operator", "second")
            .await
            .expect("second admin");
        let live_before = live_admins(&node, &first).await;
        assert_eq!(live_before, 2);
        let (a, b) = tokio::join!(
            node.revoke_api_key(&first, first.key_id),
            node.revoke_api_key(&first, second.id)
        );
        let ok = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(
            ok, 1,
            "exactly one of two racing revocations wins: {a:?} {b:?}"
        );
        assert_eq!(live_admins(&node, &first).await, 1);
        if a.is_ok() {
            // The first key is gone: carry on as the second.
            return node.store().close().await;
        }
    }
    node.store().close().await;
}

async fn live_admins(node: &Node, by: &tally_service::Principal) -> usize {
    node.api_keys(by)
        .await
        .expect("keys")
        .iter()
        .filter(|k| k.role == "admin" && k.revoked_at.is_none())
        .count()
}

#[tokio::test]
async fn the_last_admin_key_cannot_be_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    the_last_admin_key_stays(NodeConfig::new(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_key_cannot_be_revoked_on_postgres() {
    let Some(url) = tally_testkit::shared_test_database_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    the_last_admin_key_stays(NodeConfig {
        database_url: Some(url),
        ..NodeConfig::new(dir.path())
    })
    .await;
}

/// An arbiter link naming this node's own arbiter key is refused at start: fairness would rest
/// on this node again.
#[tokio::test]
async fn a_node_refuses_itself_as_its_arbiter() {
    use tally_kernel::crypto::bls::ArbiterPublicKey;
    use tally_service::receipt::remote::{ArbiterLink, ArbiterRole, LinkError};
    use tally_service::receipt::{ArbiterCase, ArbiterRuling};

    struct Itself(ArbiterPublicKey);
    impl ArbiterLink for Itself {
        fn key(&self) -> ArbiterPublicKey {
            self.0
        }
        fn decide(
            &self,
            _: ArbiterCase,
        ) -> futures::future::BoxFuture<'_, Result<ArbiterRuling, LinkError>> {
            Box::pin(async { Err(LinkError::Unreachable("not asked".into())) })
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = tally_kernel::crypto::CertificateAuthority::generate(
        "CA",
        tally_kernel::Timestamp::now(),
        30,
    )
    .expect("ca");
    // Its own key, read as an arbiter node would publish it.
    let own = {
        let (node, _) = Node::open(&NodeConfig {
            arbiter_role: Some(ArbiterRole {
                trusts: ca.certificate().clone(),
            }),
            ..NodeConfig::new(dir.path())
        })
        .await
        .expect("opens");
        let key = node
            .receipts()
            .arbiter_identity()
            .expect("an arbiter")
            .arbiter_key;
        node.store().close().await;
        ArbiterPublicKey::from_hex(&key).expect("key")
    };
    let refused = Node::open(&NodeConfig {
        arbiter: Some(std::sync::Arc::new(Itself(own))),
        ..NodeConfig::new(dir.path())
    })
    .await;
    assert!(
        matches!(refused, Err(ServiceError::Setup(ref why)) if why.contains("own arbiter")),
        "{:?}",
        refused.err()
    );
}
