use super::*;

fn temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn user_lifecycle() {
    let (_dir, store) = temp();
    let alice = UserRecord::new("alice", Some("hash1".into()));
    store.insert_user(&alice).await.unwrap();
    assert!(matches!(
        store.insert_user(&alice).await,
        Err(StoreError::Exists(_))
    ));
    store
        .insert_user(&UserRecord::new("bob", None))
        .await
        .unwrap();
    let names: Vec<_> = store.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);

    store
        .set_user_password("alice", "hash2".into())
        .await
        .unwrap();
    assert_eq!(
        store
            .user("alice")
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("hash2")
    );
    assert!(matches!(
        store.set_user_password("carol", "x".into()).await,
        Err(StoreError::NotFound(_))
    ));
    store.remove_user("alice").await.unwrap();
    assert!(store.user("alice").unwrap().is_none());
    assert!(matches!(
        store.remove_user("alice").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        store
            .insert_user(&UserRecord::new("alice", Some("h".into())))
            .await
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert!(store.user("alice").unwrap().is_some());
}
