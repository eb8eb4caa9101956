//! Given / when / then for every rule of the `Group` aggregate, and the message rules.

use chrono::Duration;
use cqrs_es::test::TestFramework;

use super::*;

type Given = TestFramework<Group>;

const OWNER: i64 = 1;
const ADMIN: i64 = 2;
const MEMBER: i64 = 3;
const OTHER: i64 = 4;
const OUTSIDER: i64 = 9;

fn at() -> Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn created() -> GroupEvent {
    GroupEvent::GroupCreated {
        group_id: 10,
        name: "Support circle".into(),
        notice: String::new(),
        avatar: String::new(),
        owner_id: OWNER,
        member_ids: vec![ADMIN, MEMBER, OTHER],
        member_cap: DEFAULT_MEMBER_CAP,
        at: at(),
    }
}

fn admin_made() -> GroupEvent {
    GroupEvent::MemberRoleChanged {
        actor_id: OWNER,
        user_id: ADMIN,
        role: GroupRole::Admin,
        at: at(),
    }
}

fn history() -> Vec<GroupEvent> {
    vec![created(), admin_made()]
}

fn dissolved() -> Vec<GroupEvent> {
    let mut h = history();
    h.push(GroupEvent::GroupDissolved {
        by: Dissolver::Owner { user_id: OWNER },
        at: at(),
    });
    h
}

fn group(events: Vec<GroupEvent>) -> Group {
    let mut g = Group::default();
    for e in events {
        g.apply(e);
    }
    g
}

fn text(s: &str) -> MessageDraft {
    MessageDraft {
        content: s.into(),
        ..Default::default()
    }
}

#[test]
fn creating_a_group_makes_its_creator_owner_and_skips_repeats() {
    Given::with(())
        .given_no_previous_events()
        .when(GroupCommand::Create {
            group_id: 10,
            name: "  Support circle ".into(),
            notice: String::new(),
            avatar: String::new(),
            owner_id: OWNER,
            member_ids: vec![ADMIN, OWNER, MEMBER, ADMIN, OTHER],
            member_cap: 0,
            at: at(),
        })
        .then_expect_events(vec![created()]);
    let g = group(vec![created()]);
    assert_eq!(g.role_of(OWNER), Some(GroupRole::Owner));
    assert_eq!(g.role_of(MEMBER), Some(GroupRole::Member));
    assert_eq!(g.members.len(), 4);
}

#[test]
fn a_group_is_created_once_with_a_valid_name_within_its_cap() {
    Given::with(())
        .given(vec![created()])
        .when(GroupCommand::Create {
            group_id: 10,
            name: "again".into(),
            notice: String::new(),
            avatar: String::new(),
            owner_id: OWNER,
            member_ids: vec![],
            member_cap: 0,
            at: at(),
        })
        .then_expect_error(GroupError::AlreadyCreated);
    let create = |name: &str, members: Vec<i64>, cap: usize| GroupCommand::Create {
        group_id: 11,
        name: name.into(),
        notice: String::new(),
        avatar: String::new(),
        owner_id: OWNER,
        member_ids: members,
        member_cap: cap,
        at: at(),
    };
    Given::with(())
        .given_no_previous_events()
        .when(create("   ", vec![], 0))
        .then_expect_error(GroupError::Invalid {
            field: "name",
            reason: "must not be empty",
        });
    Given::with(())
        .given_no_previous_events()
        .when(create(&"群".repeat(51), vec![], 0))
        .then_expect_error(GroupError::Invalid {
            field: "name",
            reason: "at most 50 characters",
        });
    Given::with(())
        .given_no_previous_events()
        .when(create("g", vec![2, 3, 4], 3))
        .then_expect_error(GroupError::CapExceeded(3));
    Given::with(())
        .given_no_previous_events()
        .when(create("g", vec![2, -3], 0))
        .then_expect_error(GroupError::Invalid {
            field: "member_ids",
            reason: "must be positive user ids",
        });
}

#[test]
fn a_member_cannot_add_others_unless_admin() {
    Given::with(())
        .given(history())
        .when(GroupCommand::AddMembers {
            actor_id: MEMBER,
            user_ids: vec![OUTSIDER],
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner or admins"));
    Given::with(())
        .given(history())
        .when(GroupCommand::AddMembers {
            actor_id: OUTSIDER,
            user_ids: vec![OUTSIDER],
            at: at(),
        })
        .then_expect_error(GroupError::NotMember);
    Given::with(())
        .given(history())
        .when(GroupCommand::AddMembers {
            actor_id: ADMIN,
            user_ids: vec![MEMBER, OUTSIDER, OUTSIDER],
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::MembersAdded {
            actor_id: ADMIN,
            user_ids: vec![OUTSIDER],
            at: at(),
        }]);
    // Everyone already belongs: nothing to write (a retried command is harmless).
    Given::with(())
        .given(history())
        .when(GroupCommand::AddMembers {
            actor_id: OWNER,
            user_ids: vec![MEMBER],
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn the_member_cap_holds_when_adding() {
    let mut h = vec![GroupEvent::GroupCreated {
        group_id: 10,
        name: "small".into(),
        notice: String::new(),
        avatar: String::new(),
        owner_id: OWNER,
        member_ids: vec![MEMBER],
        member_cap: 3,
        at: at(),
    }];
    Given::with(())
        .given(h.clone())
        .when(GroupCommand::AddMembers {
            actor_id: OWNER,
            user_ids: vec![5, 6],
            at: at(),
        })
        .then_expect_error(GroupError::CapExceeded(3));
    h.push(GroupEvent::MembersAdded {
        actor_id: OWNER,
        user_ids: vec![5],
        at: at(),
    });
    assert_eq!(group(h).members.len(), 3);
}

#[test]
fn removing_follows_rank_and_never_touches_the_owner() {
    Given::with(())
        .given(history())
        .when(GroupCommand::RemoveMember {
            actor_id: ADMIN,
            user_id: MEMBER,
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::MemberRemoved {
            actor_id: ADMIN,
            user_id: MEMBER,
            at: at(),
        }]);
    Given::with(())
        .given(history())
        .when(GroupCommand::RemoveMember {
            actor_id: ADMIN,
            user_id: OWNER,
            at: at(),
        })
        .then_expect_error(GroupError::OwnerUntouchable);
    Given::with(())
        .given(history())
        .when(GroupCommand::RemoveMember {
            actor_id: MEMBER,
            user_id: OTHER,
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner or admins"));
    let mut two_admins = history();
    two_admins.push(GroupEvent::MemberRoleChanged {
        actor_id: OWNER,
        user_id: OTHER,
        role: GroupRole::Admin,
        at: at(),
    });
    Given::with(())
        .given(two_admins)
        .when(GroupCommand::RemoveMember {
            actor_id: ADMIN,
            user_id: OTHER,
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner"));
    Given::with(())
        .given(history())
        .when(GroupCommand::RemoveMember {
            actor_id: OWNER,
            user_id: OUTSIDER,
            at: at(),
        })
        .then_expect_error(GroupError::NotMember);
}

#[test]
fn the_owner_cannot_leave_without_transferring() {
    Given::with(())
        .given(history())
        .when(GroupCommand::Leave {
            user_id: OWNER,
            at: at(),
        })
        .then_expect_error(GroupError::OwnerMustTransfer);
    Given::with(())
        .given(history())
        .when(GroupCommand::Leave {
            user_id: MEMBER,
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::MemberLeft {
            user_id: MEMBER,
            at: at(),
        }]);
    let mut transferred = history();
    transferred.push(GroupEvent::OwnershipTransferred {
        from_user_id: OWNER,
        to_user_id: MEMBER,
        at: at(),
    });
    Given::with(())
        .given(transferred.clone())
        .when(GroupCommand::Leave {
            user_id: OWNER,
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::MemberLeft {
            user_id: OWNER,
            at: at(),
        }]);
    let g = group(transferred);
    assert_eq!(g.owner_id, MEMBER);
    assert_eq!(g.role_of(OWNER), Some(GroupRole::Admin));
}

#[test]
fn only_the_owner_changes_roles_and_transfers_ownership() {
    Given::with(())
        .given(history())
        .when(GroupCommand::ChangeRole {
            actor_id: ADMIN,
            user_id: MEMBER,
            role: GroupRole::Admin,
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner"));
    Given::with(())
        .given(history())
        .when(GroupCommand::ChangeRole {
            actor_id: OWNER,
            user_id: MEMBER,
            role: GroupRole::Owner,
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::OwnershipTransferred {
            from_user_id: OWNER,
            to_user_id: MEMBER,
            at: at(),
        }]);
    Given::with(())
        .given(history())
        .when(GroupCommand::ChangeRole {
            actor_id: OWNER,
            user_id: OWNER,
            role: GroupRole::Member,
            at: at(),
        })
        .then_expect_error(GroupError::Refused {
            field: "user_id",
            reason: "the owner transfers ownership to another member",
        });
    Given::with(())
        .given(history())
        .when(GroupCommand::ChangeRole {
            actor_id: OWNER,
            user_id: ADMIN,
            role: GroupRole::Admin,
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn mutes_follow_rank_and_expire() {
    let until = at() + Duration::minutes(10);
    let muted = GroupEvent::MemberMuted {
        actor_id: ADMIN,
        user_id: MEMBER,
        until: Some(until),
        at: at(),
    };
    Given::with(())
        .given(history())
        .when(GroupCommand::MuteMember {
            actor_id: ADMIN,
            user_id: MEMBER,
            until: Some(until),
            at: at(),
        })
        .then_expect_events(vec![muted.clone()]);
    Given::with(())
        .given(history())
        .when(GroupCommand::MuteMember {
            actor_id: ADMIN,
            user_id: OWNER,
            until: Some(until),
            at: at(),
        })
        .then_expect_error(GroupError::OwnerUntouchable);
    Given::with(())
        .given(history())
        .when(GroupCommand::MuteMember {
            actor_id: MEMBER,
            user_id: OTHER,
            until: Some(until),
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner or admins"));
    let mut h = history();
    h.push(muted);
    let g = group(h.clone());
    // A muted member's message is refused until the mute ends.
    assert_eq!(
        g.accept_message(MEMBER, text("hi"), &[], at() + Duration::minutes(1)),
        Err(GroupMessageRefusal::Muted { until })
    );
    assert!(g.accept_message(MEMBER, text("hi"), &[], until).is_ok());
    // Unmuting writes an event; unmuting again writes nothing.
    Given::with(())
        .given(h)
        .when(GroupCommand::MuteMember {
            actor_id: OWNER,
            user_id: MEMBER,
            until: None,
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::MemberMuted {
            actor_id: OWNER,
            user_id: MEMBER,
            until: None,
            at: at(),
        }]);
    Given::with(())
        .given(history())
        .when(GroupCommand::MuteMember {
            actor_id: OWNER,
            user_id: MEMBER,
            until: None,
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_muted_group_lets_only_owner_and_admins_speak() {
    Given::with(())
        .given(history())
        .when(GroupCommand::MuteAll {
            actor_id: MEMBER,
            muted: true,
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner or admins"));
    let mute = GroupEvent::GroupMuted {
        actor_id: ADMIN,
        muted: true,
        at: at(),
    };
    Given::with(())
        .given(history())
        .when(GroupCommand::MuteAll {
            actor_id: ADMIN,
            muted: true,
            at: at(),
        })
        .then_expect_events(vec![mute.clone()]);
    let mut h = history();
    h.push(mute);
    let g = group(h);
    assert_eq!(
        g.accept_message(MEMBER, text("hi"), &[], at()),
        Err(GroupMessageRefusal::GroupMuted)
    );
    assert_eq!(
        g.accept_message(ADMIN, text("hi"), &[], at())
            .unwrap()
            .sender_role,
        GroupRole::Admin
    );
    assert!(g.accept_message(OWNER, text("hi"), &[], at()).is_ok());
}

#[test]
fn nobody_speaks_in_or_changes_a_dissolved_group() {
    let g = group(dissolved());
    assert_eq!(
        g.accept_message(OWNER, text("hi"), &[], at()),
        Err(GroupMessageRefusal::Dissolved)
    );
    assert!(!g.is_member(MEMBER));
    Given::with(())
        .given(dissolved())
        .when(GroupCommand::AddMembers {
            actor_id: OWNER,
            user_ids: vec![OUTSIDER],
            at: at(),
        })
        .then_expect_error(GroupError::Dissolved);
    Given::with(())
        .given(dissolved())
        .when(GroupCommand::Leave {
            user_id: MEMBER,
            at: at(),
        })
        .then_expect_error(GroupError::Dissolved);
    // Dissolving again writes nothing.
    Given::with(())
        .given(dissolved())
        .when(GroupCommand::Dissolve {
            by: Dissolver::Platform { admin_id: 1 },
            at: at(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn only_the_owner_or_the_platform_dissolves() {
    Given::with(())
        .given(history())
        .when(GroupCommand::Dissolve {
            by: Dissolver::Owner { user_id: ADMIN },
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner"));
    Given::with(())
        .given(history())
        .when(GroupCommand::Dissolve {
            by: Dissolver::Platform { admin_id: 77 },
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::GroupDissolved {
            by: Dissolver::Platform { admin_id: 77 },
            at: at(),
        }]);
    Given::with(())
        .given_no_previous_events()
        .when(GroupCommand::Dissolve {
            by: Dissolver::Platform { admin_id: 77 },
            at: at(),
        })
        .then_expect_error(GroupError::NotFound);
}

#[test]
fn updates_need_a_manager_and_write_only_changes() {
    Given::with(())
        .given(history())
        .when(GroupCommand::Update {
            actor_id: MEMBER,
            name: Some("mine".into()),
            notice: None,
            avatar: None,
            at: at(),
        })
        .then_expect_error(GroupError::NotPermitted("owner or admins"));
    Given::with(())
        .given(history())
        .when(GroupCommand::Update {
            actor_id: ADMIN,
            name: Some("Support circle".into()),
            notice: Some("Be kind".into()),
            avatar: None,
            at: at(),
        })
        .then_expect_events(vec![GroupEvent::GroupUpdated {
            actor_id: ADMIN,
            name: None,
            notice: Some("Be kind".into()),
            avatar: None,
            at: at(),
        }]);
    Given::with(())
        .given(history())
        .when(GroupCommand::Update {
            actor_id: OWNER,
            name: None,
            notice: Some("字".repeat(1001)),
            avatar: None,
            at: at(),
        })
        .then_expect_error(GroupError::Invalid {
            field: "notice",
            reason: "at most 1000 characters",
        });
}

#[test]
fn messages_need_membership_a_valid_draft_and_member_mentions() {
    let g = group(history());
    assert_eq!(
        g.accept_message(OUTSIDER, text("hi"), &[], at()),
        Err(GroupMessageRefusal::NotMember)
    );
    assert_eq!(
        Group::default().accept_message(OWNER, text("hi"), &[], at()),
        Err(GroupMessageRefusal::NotFound)
    );
    assert!(matches!(
        g.accept_message(MEMBER, text(" "), &[], at()),
        Err(GroupMessageRefusal::Invalid(MessageRefusal::Empty))
    ));
    let refused = g
        .accept_message(MEMBER, text("@x"), &[OUTSIDER], at())
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "mentions: every mentioned user must be a member of the group"
    );
    let m = g
        .accept_message(MEMBER, text("@a @b"), &[ADMIN, OWNER, ADMIN], at())
        .unwrap();
    assert_eq!(m.mentions, vec![ADMIN, OWNER]);
    assert_eq!((m.sender_role, m.content_type), (GroupRole::Member, "text"));
}

#[test]
fn a_member_recalls_their_own_message_within_two_minutes() {
    let g = group(history());
    let sent = at();
    assert_eq!(
        g.may_recall(MEMBER, MEMBER, sent, sent + Duration::seconds(119)),
        Ok(())
    );
    assert!(matches!(
        g.may_recall(MEMBER, MEMBER, sent, sent + Duration::seconds(120)),
        Err(GroupError::Refused { field: "seq", .. })
    ));
    assert_eq!(
        g.may_recall(OTHER, MEMBER, sent, sent),
        Err(GroupError::NotPermitted("message's sender"))
    );
    assert_eq!(
        g.may_recall(OUTSIDER, OUTSIDER, sent, sent),
        Err(GroupError::NotMember)
    );
    assert_eq!(
        group(dissolved()).may_recall(MEMBER, MEMBER, sent, sent),
        Err(GroupError::Dissolved)
    );
}
