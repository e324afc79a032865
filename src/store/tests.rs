use super::*;

/// The stored password hash of `name`, who exists.
fn password_hash(store: &Store, name: &str) -> Option<String> {
    store.user(name).unwrap().unwrap().password_hash
}

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
    assert_eq!(password_hash(&store, "alice").as_deref(), Some("hash2"));
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

/// Opens the store at `path` again. sled's flusher thread can hold the file lock for a moment
/// after the previous handle is dropped (seen under load: 5 of 120 runs of a reopening test).
fn reopen(path: &std::path::Path) -> Result<Store, StoreError> {
    for _ in 0..250 {
        match Store::open(path) {
            Err(StoreError::Sled(sled::Error::Io(e))) if e.to_string().contains("acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
    Store::open(path)
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
    let store = reopen(&path).unwrap();
    assert!(store.user("alice").unwrap().is_some());
}

fn device(name: &str) -> DeviceRecord {
    DeviceRecord::windows(name)
}

#[tokio::test]
async fn assignment_rules() {
    let (_dir, store) = temp();
    store
        .insert_user(&UserRecord::new("alice", None))
        .await
        .unwrap();
    store
        .insert_user(&UserRecord::new("bob", None))
        .await
        .unwrap();
    for n in ["d1", "d2", "d3"] {
        store.insert_device(&device(n)).await.unwrap();
    }
    assert!(matches!(
        store.insert_device(&device("d1")).await,
        Err(StoreError::Exists(_))
    ));
    store.assign("alice", "d1", 2).await.unwrap();
    store.assign("alice", "d2", 2).await.unwrap();
    let err = store.assign("alice", "d3", 2).await.unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert!(matches!(
        store.assign("bob", "d1", 2).await,
        Err(StoreError::Conflict(_))
    ));
    store.set_user_max_devices("alice", Some(3)).await.unwrap();
    store.assign("alice", "d3", 2).await.unwrap();

    // Assigned devices cannot be removed; unassigned ones can.
    assert!(matches!(
        store.remove_device("d1").await,
        Err(StoreError::Conflict(_))
    ));
    store.unassign("alice", "d1").await.unwrap();
    store.remove_device("d1").await.unwrap();

    // Removing the user unassigns the rest.
    store.remove_user("alice").await.unwrap();
    assert_eq!(store.device("d2").unwrap().unwrap().owner, None);
    store.remove_device("d2").await.unwrap();
}

#[tokio::test]
async fn serials_are_unique_and_registration_is_atomic() {
    let (_dir, store) = temp();
    let mut a = device("a");
    a.serial = Some("SER-A".into());
    store.insert_device(&a).await.unwrap();
    let mut clash = device("b");
    clash.serial = Some("ser-a".into());
    assert!(matches!(
        store.insert_device(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    store.insert_device(&device("b")).await.unwrap();
    store.insert_device(&device("c")).await.unwrap();
    store
        .insert_user(&UserRecord::new("u", None))
        .await
        .unwrap();
    for d in ["b", "c"] {
        store.assign("u", d, 3).await.unwrap();
    }
    assert_eq!(
        store.device_by_serial("ser-a").unwrap().as_deref(),
        Some("a")
    );

    assert_eq!(
        store.register_serial("b", "SER-A", "u").await.unwrap(),
        Registration::SerialInUse { device: "a".into() }
    );
    // Many concurrent registrations of different serials on one free device: one wins.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.register_serial("b", &format!("S{i}"), "u").await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() == Registration::Registered {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    // One serial on two free devices concurrently: only one gets it.
    let (s1, s2) = (store.clone(), store.clone());
    let (r1, r2) = tokio::join!(
        tokio::spawn(async move { s1.register_serial("c", "SHARED", "u").await.unwrap() }),
        tokio::spawn(async move { s2.register_serial("b", "SHARED", "u").await.unwrap() }),
    );
    let regs = [r1.unwrap(), r2.unwrap()];
    assert_eq!(
        regs.iter()
            .filter(|r| **r == Registration::Registered)
            .count(),
        1,
        "{regs:?}"
    );

    // Changing a serial moves the index entry.
    store
        .update_device("a", |d| {
            d.serial = Some("SER-NEW".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(store.device_by_serial("SER-A").unwrap(), None);
    assert_eq!(
        store.device_by_serial("ser-new").unwrap().as_deref(),
        Some("a")
    );
}

#[tokio::test]
async fn import_is_all_or_nothing() {
    let (_dir, store) = temp();
    let mut owned = device("d1");
    owned.owner = Some("carol".into());
    let users = [UserRecord::new("carol", None)];
    let mut dup = device("d2");
    dup.serial = Some("X".into());
    let mut dup2 = device("d3");
    dup2.serial = Some("x".into());
    let err = store
        .import(&users, &[owned.clone(), dup.clone(), dup2], 2)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(store.users().unwrap().is_empty());
    assert!(store.devices().unwrap().is_empty());
    store.import(&users, &[owned, dup], 2).await.unwrap();
    assert_eq!(store.user("carol").unwrap().unwrap().devices, ["d1"]);
}

/// Every kind of write is visible to the next read, even when the entry was read (and so
/// cached) just before: the decoded cache never serves a user or device older than the last
/// write.
#[tokio::test]
async fn reads_after_writes_see_the_write_through_the_cache() {
    let (_dir, store) = temp();
    let mut alice = UserRecord::new("alice", Some("h1".into()));
    alice.max_devices = Some(5);
    store.insert_user(&alice).await.unwrap();
    store
        .insert_user(&UserRecord::new("bob", None))
        .await
        .unwrap();
    store.insert_device(&device("laptop")).await.unwrap();
    let read = |s: &Store, user| s.access(user).unwrap().unwrap();
    let names = |a: &Access| a.devices().map(|d| d.name().to_owned()).collect::<Vec<_>>();

    read(&store, "alice");
    store.set_user_password("alice", "h2".into()).await.unwrap();
    assert_eq!(
        read(&store, "alice").password(),
        Some(HashFingerprint::of("h2"))
    );

    store.assign("alice", "laptop", 3).await.unwrap();
    assert_eq!(names(&read(&store, "alice")), ["laptop"]);

    store
        .update_device("laptop", |d| {
            d.enabled = false;
            Ok(())
        })
        .await
        .unwrap();
    assert!(!read(&store, "alice").device(0).enabled);

    assert_eq!(store.device_by_serial("ABC123").unwrap(), None);
    // Disabled, or someone else's: not a free slot of alice's.
    assert_eq!(
        store
            .register_serial("laptop", "abc123", "alice")
            .await
            .unwrap(),
        Registration::SlotTaken
    );
    store
        .update_device("laptop", |d| {
            d.enabled = true;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .register_serial("laptop", "abc123", "bob")
            .await
            .unwrap(),
        Registration::SlotTaken
    );
    assert_eq!(
        store
            .register_serial("laptop", "abc123", "alice")
            .await
            .unwrap(),
        Registration::Registered
    );
    assert_eq!(
        store.device_by_serial("ABC123").unwrap().as_deref(),
        Some("laptop")
    );
    assert!(read(&store, "alice")
        .device(0)
        .serial()
        .is_some_and(|s| s.matches("abc123")));

    // Moved to bob: gone from alice's entry, in bob's (both read, so cached, before).
    read(&store, "bob");
    store.unassign("alice", "laptop").await.unwrap();
    assert!(read(&store, "alice").devices().len() == 0);
    store.assign("bob", "laptop", 3).await.unwrap();
    assert_eq!(names(&read(&store, "bob")), ["laptop"]);
    store.unassign("bob", "laptop").await.unwrap();
    assert!(read(&store, "bob").devices().len() == 0);

    store.remove_device("laptop").await.unwrap();
    assert!(store.device("laptop").unwrap().is_none());
    assert_eq!(store.device_by_serial("abc123").unwrap(), None);
    store.remove_user("alice").await.unwrap();
    assert!(store.access("alice").unwrap().is_none());
    assert!(store.user("alice").unwrap().is_none());
}

/// A user's entry holds only the devices whose record names the user as owner, whatever the
/// user record lists.
#[test]
fn an_entry_holds_only_the_devices_the_user_owns() {
    let mut u = UserRecord::new("alice", Some("h".into()));
    u.devices = vec!["mine".into(), "theirs".into(), "nobodys".into()];
    let mine = DeviceRecord {
        owner: Some("alice".into()),
        ..device("mine")
    };
    let theirs = DeviceRecord {
        owner: Some("bob".into()),
        ..device("theirs")
    };
    let a = Access::new(&u, &[mine, theirs, device("nobodys")]);
    assert_eq!(a.devices().len(), 1);
    assert_eq!(a.device(0).name(), "mine");
    assert_eq!(a.password(), Some(HashFingerprint::of("h")));
}

/// The writes that change an index entry or cascade to other records: a serial asked for
/// under other spellings, and a removed user's devices cached with their owner.
#[tokio::test]
async fn moved_index_entries_and_cascades_are_not_served_stale() {
    let (_dir, store) = temp();
    store
        .insert_user(&UserRecord::new("bob", None))
        .await
        .unwrap();
    let mut tablet = device("tablet");
    tablet.serial = Some("SER-1".into());
    tablet.mac = Some("12:34:56:78:90:ab".into());
    store.insert_device(&tablet).await.unwrap();
    store.assign("bob", "tablet", 3).await.unwrap();

    // Any spelling a NAS sends.
    for s in ["ser-1", "SER-1", " Ser-1"] {
        assert_eq!(
            store.device_by_serial(s).unwrap().as_deref(),
            Some("tablet")
        );
    }
    assert!(store.device_by_mac("12:34:56:78:90:ab").unwrap().is_some());
    assert_eq!(
        store.device("tablet").unwrap().unwrap().owner.as_deref(),
        Some("bob")
    );

    store
        .update_device("tablet", |d| {
            d.serial = Some("SER-2".into());
            d.mac = None;
            Ok(())
        })
        .await
        .unwrap();
    for s in ["ser-1", "SER-1", " Ser-1"] {
        assert_eq!(store.device_by_serial(s).unwrap(), None, "{s}");
    }
    assert_eq!(store.device_by_mac("12:34:56:78:90:ab").unwrap(), None);
    assert_eq!(
        store.device_by_serial("ser-2").unwrap().as_deref(),
        Some("tablet")
    );

    let read_owner = || store.device("tablet").unwrap().unwrap().owner.clone();
    assert_eq!(read_owner().as_deref(), Some("bob"));
    assert_eq!(store.access("bob").unwrap().unwrap().devices().len(), 1);
    store.remove_user("bob").await.unwrap();
    assert_eq!(read_owner(), None);
    assert!(store.access("bob").unwrap().is_none());
}

/// A write drops the decoded entries of the users it changed and nothing else: during a wave
/// of first connections, everyone else keeps being served from memory.
#[tokio::test]
async fn a_registration_leaves_other_records_cached() {
    let (_dir, store) = temp();
    let users: Vec<_> = (0..20)
        .map(|i| UserRecord::new(format!("u{i}"), None))
        .collect();
    let devices: Vec<_> = (0..20)
        .map(|i| DeviceRecord {
            owner: Some(format!("u{i}")),
            serial: (i > 0).then(|| format!("S{i}")),
            ..device(&format!("d{i}"))
        })
        .collect();
    store.import(&users, &devices, 3).await.unwrap();
    for i in 0..20 {
        store.access(&format!("u{i}")).unwrap().unwrap();
    }
    let c = &store.cache.access;
    assert_eq!(c.len(), 20);

    assert_eq!(
        store.register_serial("d0", "S0", "u0").await.unwrap(),
        Registration::Registered
    );
    assert!(
        !c.contains("u0"),
        "the registered device's owner is read again"
    );
    assert_eq!(c.len(), 19, "nothing else was dropped");
    assert_eq!(
        store
            .access("u0")
            .unwrap()
            .unwrap()
            .device(0)
            .serial()
            .map(|s| (s.matches("S0"), s.matches("S1"))),
        Some((true, false))
    );

    store.set_user_password("u3", "h".into()).await.unwrap();
    assert!(!c.contains("u3"));
    assert_eq!(c.len(), 19);
}

/// A schema-1 store (JSON records) opens: it is marked with the current schema, its records read as they
/// are, and each is stored compactly once written again. A newer schema is refused.
#[tokio::test]
async fn a_schema_1_store_is_read_then_converted_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let schema = |store: &Store| {
        let v = store
            .db
            .open_tree(META_TREE)
            .unwrap()
            .get(SCHEMA_KEY)
            .unwrap()
            .unwrap();
        u32::from_be_bytes(v.as_ref().try_into().unwrap())
    };
    let set_schema = |store: &Store, v: u32| {
        let meta = store.db.open_tree(META_TREE).unwrap();
        meta.insert(SCHEMA_KEY, &v.to_be_bytes()).unwrap();
        store.db.flush().unwrap();
    };
    {
        let store = Store::open(&path).unwrap();
        let json = br#"{"name":"alice","password_hash":"h1","devices":["laptop"],"created":1,"updated":2}"#;
        store.users.insert("alice", &json[..]).unwrap();
        store
            .users
            .insert("bob", &br#"{"name":"bob","created":3,"updated":4}"#[..])
            .unwrap();
        store.devices.insert("laptop", &br#"{"name":"laptop","device_type":"windows","enabled":true,"device_auth":true,"method":"serial","serial":"S1","mac":null,"owner":"alice","created":1,"updated":2}"#[..]).unwrap();
        set_schema(&store, 1);
    }
    let store = reopen(&path).unwrap();
    assert_eq!(schema(&store), SCHEMA_VERSION);
    let alice = store.user("alice").unwrap().unwrap();
    assert_eq!(
        (
            alice.password_hash.as_deref(),
            alice.devices.as_slice(),
            alice.updated
        ),
        (Some("h1"), &["laptop".to_owned()][..], 2)
    );
    let bob = store.user("bob").unwrap().unwrap();
    assert_eq!(
        (bob.password_hash, bob.devices.len(), bob.created),
        (None, 0, 3)
    );
    let a = store.access("alice").unwrap().unwrap();
    assert_eq!(
        a.device(0)
            .serial()
            .map(|s| (s.matches("S1"), s.matches("S0"))),
        Some((true, false))
    );

    let first_byte = |tree: &sled::Tree, key: &str| tree.get(key).unwrap().unwrap()[0];
    assert_eq!(first_byte(&store.users, "alice"), b'{');
    store.set_user_password("alice", "h2".into()).await.unwrap();
    assert_eq!(first_byte(&store.users, "alice"), 1, "compact once written");
    assert_eq!(
        first_byte(&store.users, "bob"),
        b'{',
        "the others as they were"
    );
    assert_eq!(password_hash(&store, "alice").as_deref(), Some("h2"));

    set_schema(&store, SCHEMA_VERSION + 1);
    drop((a, store));
    assert!(matches!(
        reopen(&path),
        Err(StoreError::Schema { found }) if found == SCHEMA_VERSION + 1
    ));
}

#[tokio::test]
async fn an_update_of_an_undecodable_user_fails_and_keeps_the_record() {
    let (_dir, store) = temp();
    store
        .insert_user(&UserRecord::new("alice", None))
        .await
        .unwrap();
    store.users.insert("alice", &[0x7f]).unwrap();
    let e = store
        .update_user("alice", |u| u.email = Some("a@example.com".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(matches!(
        store.set_user_password("alice", "h".into()).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        store.users.get("alice").unwrap().as_deref(),
        Some(&[0x7f][..])
    );
}

/// A link is stored only while its device is still the user's: a send whose mail went out
/// while the device was unassigned must not bring back the profile the unassignment forgot.
#[tokio::test]
async fn a_profile_link_needs_the_assignment_when_stored() {
    let (_dir, store) = temp();
    store
        .insert_user(&UserRecord::new("alice", None))
        .await
        .unwrap();
    store.insert_device(&device("laptop")).await.unwrap();
    let rec = ProfileRecord {
        user: "alice".into(),
        device: "laptop".into(),
        token_hash: Some("ab".repeat(32)),
        ..ProfileRecord::default()
    };
    assert!(matches!(
        store.set_profile_link(&rec).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.profile("alice", "laptop").unwrap(), None);
    store.assign("alice", "laptop", 2).await.unwrap();
    store.set_profile_link(&rec).await.unwrap();
    assert!(store.profile("alice", "laptop").unwrap().is_some());
}

/// A store directory it creates is the daemon user's alone (hashes, the admin token).
#[test]
fn a_new_store_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/ravpnd");
    let _store = Store::open(&path).unwrap();
    // What sled creates inside follows the umask; this directory closes it to others.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

/// An import larger than the page cache pages part of the store out; moving those pages'
/// table entries to fresh allocations (`compact_page_table`, vendor/sled change 4, which the
/// daemon runs every 10 s) keeps every record as it was: with writes and reads racing passes
/// that move every entry (swaps racing other changes of the same entries), after the daemon's
/// own pass, and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_the_page_table_keeps_every_record() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open_with_cache(&path, 16, 1).unwrap();
    let hash = |i: usize, round: u32| format!("$argon2id$v=19$m=8,t=1,p=1$salt{i:05}${round:040}");
    for start in (0..N).step_by(2_500) {
        let users: Vec<_> = (start..start + 2_500)
            .map(|i| UserRecord::new(format!("user{i}"), Some(hash(i, 0))))
            .collect();
        let devices: Vec<_> = (start..start + 2_500)
            .map(|i| DeviceRecord {
                owner: Some(format!("user{i}")),
                serial: Some(format!("{i:064X}")),
                ..device(&format!("dev{i}"))
            })
            .collect();
        store.import(&users, &devices, 3).await.unwrap();
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let (db, stop) = (store.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut copied = 0;
            while !stop.load(Ordering::Relaxed) {
                copied += db.compact_page_table(&mut |_| true);
            }
            copied
        })
    };
    for i in (0..N).step_by(7) {
        store
            .set_user_password(&format!("user{i}"), hash(i, 1))
            .await
            .unwrap();
        assert!(store
            .device(&format!("dev{}", (i * 3) % N))
            .unwrap()
            .is_some());
    }
    stop.store(true, Ordering::Relaxed);
    let copied = racer.join().unwrap();
    assert!(
        copied > 0,
        "no page was paged out: the store fit in the cache"
    );
    // And the daemon's own pass (entries in sparse slabs only).
    store.compact_memory();

    let check = |store: &Store| {
        let users = store.users().unwrap();
        assert_eq!(users.len(), N);
        for u in users {
            let i: usize = u.name["user".len()..].parse().unwrap();
            let round = u32::from(i.is_multiple_of(7));
            assert_eq!(u.password_hash, Some(hash(i, round)), "{}", u.name);
            assert_eq!(u.devices, [format!("dev{i}")]);
        }
        let devices = store.devices().unwrap();
        assert_eq!(devices.len(), N);
        for d in devices {
            let i: usize = d.name["dev".len()..].parse().unwrap();
            assert_eq!(d.owner, Some(format!("user{i}")));
            assert_eq!(d.serial, Some(format!("{i:064X}")));
        }
    };
    check(&store);
    drop(store);
    check(&reopen(&path).unwrap());
}
