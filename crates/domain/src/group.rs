//! The `Group` aggregate (`ev.group.<group_id>`): a group conversation (seeds 002 and 004) —
//! counselors' support groups and communities, unbilled. Its events decide who belongs to the
//! group and in which role, who may speak and until when, and whether the group still exists;
//! its messages are records in the chat log, written only after [`Group::accept_message`]
//! (membership, mutes, the draft's own rules) and recalled within [`RECALL_WINDOW_SECONDS`]
//! ([`Group::may_recall`]).
//!
//! Roles: one owner, any number of admins, members. The owner and admins manage members and
//! mutes; only the owner changes roles, transfers ownership or dissolves the group (the
//! platform's administrators may dissolve any group). The owner cannot leave without first
//! transferring ownership. Commands whose effect already holds (adding members who all belong,
//! muting an already muted group) write nothing, so a retried command is harmless.

use imbl::OrdMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::chat::{MessageDraft, MessageRefusal};
use crate::{Timestamp, EVENT_VERSION};

/// Members a group holds unless created with another cap (owner included).
pub const DEFAULT_MEMBER_CAP: usize = 2_000;
/// The longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 50;
/// The longest notice, in characters.
pub const MAX_NOTICE_CHARS: usize = 1_000;
/// The longest avatar URL, in bytes.
pub const MAX_AVATAR_BYTES: usize = 500;
/// How long after sending a member may recall their own message, in seconds.
pub const RECALL_WINDOW_SECONDS: i64 = 120;

/// A member's role in a group (wire: `owner`, `admin`, `member`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    Member,
    Admin,
    Owner,
}

impl GroupRole {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Whether the role manages members and mutes (owner, admin).
    pub fn manages(self) -> bool {
        self >= Self::Admin
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub role: GroupRole,
    /// Muted until this instant (exclusive); `None`: not muted.
    pub muted_until: Option<Timestamp>,
}

/// The `Group` aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub group_id: i64,
    pub name: String,
    pub notice: String,
    pub avatar: String,
    pub owner_id: i64,
    /// Members by user id, owner included (a persistent map: the command bus clones the
    /// aggregate before each command, in O(1)).
    pub members: OrdMap<i64, GroupMember>,
    /// Whole group muted: only the owner and admins speak.
    pub all_muted: bool,
    pub member_cap: usize,
    pub created: bool,
    pub dissolved: bool,
}

/// Who dissolves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dissolver {
    /// The group's owner.
    Owner { user_id: i64 },
    /// A platform administrator (admin API, permission-checked there).
    Platform { admin_id: i64 },
}

/// Commands on a `Group`. `actor_id` is the user performing the command; `at` is "now".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Creates the group with `owner_id` as owner and `member_ids` as members (the owner and
    /// repeats are skipped; at most `member_cap` members in all).
    Create {
        group_id: i64,
        name: String,
        notice: String,
        avatar: String,
        owner_id: i64,
        member_ids: Vec<i64>,
        member_cap: usize,
        at: Timestamp,
    },
    /// Changes the name, notice or avatar (owner or admin); `None` keeps a field.
    Update {
        actor_id: i64,
        name: Option<String>,
        notice: Option<String>,
        avatar: Option<String>,
        at: Timestamp,
    },
    /// Adds users (owner or admin); those already in the group are skipped.
    AddMembers {
        actor_id: i64,
        user_ids: Vec<i64>,
        at: Timestamp,
    },
    /// Removes a member (the owner removes anyone but themself; an admin removes members).
    RemoveMember {
        actor_id: i64,
        user_id: i64,
        at: Timestamp,
    },
    /// A member leaves (not the owner: transfer ownership first).
    Leave { user_id: i64, at: Timestamp },
    /// Sets a member's role (owner only). `Owner` transfers ownership: the old owner becomes
    /// an admin.
    ChangeRole {
        actor_id: i64,
        user_id: i64,
        role: GroupRole,
        at: Timestamp,
    },
    /// Mutes a member until `until` (`None` unmutes); owner or admin, never the owner, and an
    /// admin only members.
    MuteMember {
        actor_id: i64,
        user_id: i64,
        until: Option<Timestamp>,
        at: Timestamp,
    },
    /// Mutes or unmutes the whole group (owner or admin); admins may still speak.
    MuteAll {
        actor_id: i64,
        muted: bool,
        at: Timestamp,
    },
    /// Dissolves the group: nobody speaks in it again, nothing else changes it.
    Dissolve { by: Dissolver, at: Timestamp },
}

/// Events of a `Group`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupEvent {
    GroupCreated {
        group_id: i64,
        name: String,
        notice: String,
        avatar: String,
        owner_id: i64,
        /// The members besides the owner, in the order given.
        member_ids: Vec<i64>,
        member_cap: usize,
        at: Timestamp,
    },
    GroupUpdated {
        actor_id: i64,
        name: Option<String>,
        notice: Option<String>,
        avatar: Option<String>,
        at: Timestamp,
    },
    MembersAdded {
        actor_id: i64,
        user_ids: Vec<i64>,
        at: Timestamp,
    },
    MemberRemoved {
        actor_id: i64,
        user_id: i64,
        at: Timestamp,
    },
    MemberLeft {
        user_id: i64,
        at: Timestamp,
    },
    MemberRoleChanged {
        actor_id: i64,
        user_id: i64,
        role: GroupRole,
        at: Timestamp,
    },
    OwnershipTransferred {
        from_user_id: i64,
        to_user_id: i64,
        at: Timestamp,
    },
    MemberMuted {
        actor_id: i64,
        user_id: i64,
        /// `None`: unmuted.
        until: Option<Timestamp>,
        at: Timestamp,
    },
    GroupMuted {
        actor_id: i64,
        muted: bool,
        at: Timestamp,
    },
    GroupDissolved {
        by: Dissolver,
        at: Timestamp,
    },
}

impl DomainEvent for GroupEvent {
    fn event_type(&self) -> String {
        match self {
            Self::GroupCreated { .. } => "GroupCreated",
            Self::GroupUpdated { .. } => "GroupUpdated",
            Self::MembersAdded { .. } => "MembersAdded",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::MemberLeft { .. } => "MemberLeft",
            Self::MemberRoleChanged { .. } => "MemberRoleChanged",
            Self::OwnershipTransferred { .. } => "OwnershipTransferred",
            Self::MemberMuted { .. } => "MemberMuted",
            Self::GroupMuted { .. } => "GroupMuted",
            Self::GroupDissolved { .. } => "GroupDissolved",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why a group command was refused. `Display` is the text clients show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("group not found")]
    NotFound,
    #[error("group already exists")]
    AlreadyCreated,
    #[error("group has been dissolved")]
    Dissolved,
    #[error("not a member of this group")]
    NotMember,
    #[error("only the group's {0} may do this")]
    NotPermitted(&'static str),
    #[error("the owner must transfer ownership before leaving")]
    OwnerMustTransfer,
    #[error("the owner cannot be removed or muted")]
    OwnerUntouchable,
    #[error("a group holds at most {0} members")]
    CapExceeded(usize),
    /// A field is invalid: `field` on the wire, and why.
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    /// A well-formed request the group's state refuses (a recall past its window, the owner
    /// changing its own role): `field` on the wire, and why.
    #[error("{field}: {reason}")]
    Refused {
        field: &'static str,
        reason: &'static str,
    },
}

/// A group message the group accepts: the draft with a known content type and its mentions
/// (members of the group, each once, in the order given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedGroupMessage {
    /// The sender's role when the message was accepted.
    pub sender_role: GroupRole,
    pub content_type: &'static str,
    pub content: String,
    pub file_url: String,
    pub client_msg_id: Option<String>,
    pub mentions: Vec<i64>,
}

/// Why a group refuses a message. `Display` is the text clients show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupMessageRefusal {
    #[error("group not found")]
    NotFound,
    #[error("group has been dissolved")]
    Dissolved,
    #[error("not a member of this group")]
    NotMember,
    /// The sender is muted until then.
    #[error("you are muted in this group")]
    Muted { until: Timestamp },
    #[error("the group is muted")]
    GroupMuted,
    /// A field of the draft is invalid.
    #[error("{0}")]
    Invalid(MessageRefusal),
    /// A mentioned user is not a member of the group (well-formed, refused by the group's
    /// membership).
    #[error("mentions: every mentioned user must be a member of the group")]
    MentionsNonMember,
}

impl Group {
    /// The role of `user_id`, if a member.
    pub fn role_of(&self, user_id: i64) -> Option<GroupRole> {
        self.members.get(&user_id).map(|m| m.role)
    }

    /// Whether `user_id` belongs to the (existing, not dissolved) group.
    pub fn is_member(&self, user_id: i64) -> bool {
        self.created && !self.dissolved && self.members.contains_key(&user_id)
    }

    /// Whether `sender_id` may write `draft` into the group at `now`.
    ///
    /// # Errors
    /// [`GroupMessageRefusal`]: no such group, dissolved, not a member, the sender muted (until
    /// a time later than `now`), the whole group muted (owner and admins still speak), an invalid
    /// draft ([`MessageDraft::validate`]) or a mention of a non-member.
    pub fn accept_message(
        &self,
        sender_id: i64,
        draft: MessageDraft,
        mentions: &[i64],
        now: Timestamp,
    ) -> Result<AcceptedGroupMessage, GroupMessageRefusal> {
        if !self.created {
            return Err(GroupMessageRefusal::NotFound);
        }
        if self.dissolved {
            return Err(GroupMessageRefusal::Dissolved);
        }
        let member = self
            .members
            .get(&sender_id)
            .ok_or(GroupMessageRefusal::NotMember)?;
        if let Some(until) = member.muted_until.filter(|u| *u > now) {
            return Err(GroupMessageRefusal::Muted { until });
        }
        if self.all_muted && !member.role.manages() {
            return Err(GroupMessageRefusal::GroupMuted);
        }
        let content_type = draft.validate().map_err(GroupMessageRefusal::Invalid)?;
        let mut unique = Vec::with_capacity(mentions.len());
        for id in mentions {
            if !self.members.contains_key(id) {
                return Err(GroupMessageRefusal::MentionsNonMember);
            }
            if !unique.contains(id) {
                unique.push(*id);
            }
        }
        Ok(AcceptedGroupMessage {
            sender_role: member.role,
            content_type,
            content: draft.content,
            file_url: draft.file_url,
            client_msg_id: (!draft.client_msg_id.is_empty()).then_some(draft.client_msg_id),
            mentions: unique,
        })
    }

    /// Whether `user_id` may recall a message that `sender_id` sent at `sent_at`: their own, in
    /// a group they still belong to, within [`RECALL_WINDOW_SECONDS`] of sending.
    ///
    /// # Errors
    /// [`GroupError::NotMember`], [`GroupError::Dissolved`],
    /// [`GroupError::NotPermitted`] (someone else's message), [`GroupError::Invalid`] naming
    /// `seq` once the window has passed.
    pub fn may_recall(
        &self,
        user_id: i64,
        sender_id: i64,
        sent_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), GroupError> {
        self.existing()?;
        if !self.members.contains_key(&user_id) {
            return Err(GroupError::NotMember);
        }
        if user_id != sender_id {
            return Err(GroupError::NotPermitted("message's sender"));
        }
        if (now - sent_at).num_seconds() >= RECALL_WINDOW_SECONDS {
            return Err(GroupError::Refused {
                field: "seq",
                reason: "a message can be recalled within 2 minutes of sending",
            });
        }
        Ok(())
    }

    fn existing(&self) -> Result<(), GroupError> {
        if !self.created {
            Err(GroupError::NotFound)
        } else if self.dissolved {
            Err(GroupError::Dissolved)
        } else {
            Ok(())
        }
    }

    /// The actor's role, requiring at least `needed`.
    fn require(&self, actor_id: i64, needed: GroupRole) -> Result<GroupRole, GroupError> {
        let role = self.role_of(actor_id).ok_or(GroupError::NotMember)?;
        if role < needed {
            return Err(GroupError::NotPermitted(match needed {
                GroupRole::Owner => "owner",
                _ => "owner or admins",
            }));
        }
        Ok(role)
    }
}

fn check_name(name: &str) -> Result<(), GroupError> {
    let n = name.trim().chars().count();
    if n == 0 {
        return Err(GroupError::Invalid {
            field: "name",
            reason: "must not be empty",
        });
    }
    if n > MAX_NAME_CHARS {
        return Err(GroupError::Invalid {
            field: "name",
            reason: "at most 50 characters",
        });
    }
    Ok(())
}

fn check_notice(notice: &str) -> Result<(), GroupError> {
    if notice.chars().count() > MAX_NOTICE_CHARS {
        return Err(GroupError::Invalid {
            field: "notice",
            reason: "at most 1000 characters",
        });
    }
    Ok(())
}

fn check_avatar(avatar: &str) -> Result<(), GroupError> {
    if avatar.len() > MAX_AVATAR_BYTES {
        return Err(GroupError::Invalid {
            field: "avatar",
            reason: "at most 500 characters",
        });
    }
    Ok(())
}

fn check_ids(field: &'static str, ids: &[i64]) -> Result<(), GroupError> {
    if ids.iter().any(|id| *id <= 0) {
        return Err(GroupError::Invalid {
            field,
            reason: "must be positive user ids",
        });
    }
    Ok(())
}

impl Aggregate for Group {
    const TYPE: &'static str = "group";
    type Command = GroupCommand;
    type Event = GroupEvent;
    type Error = GroupError;
    type Services = ();

    async fn handle(
        &mut self,
        command: GroupCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), GroupError> {
        let event = match command {
            GroupCommand::Create {
                group_id,
                name,
                notice,
                avatar,
                owner_id,
                member_ids,
                member_cap,
                at,
            } => {
                if self.created {
                    return Err(GroupError::AlreadyCreated);
                }
                check_name(&name)?;
                check_notice(&notice)?;
                check_avatar(&avatar)?;
                check_ids("member_ids", &member_ids)?;
                let mut members: Vec<i64> = Vec::with_capacity(member_ids.len());
                for id in member_ids {
                    if id != owner_id && !members.contains(&id) {
                        members.push(id);
                    }
                }
                let cap = if member_cap == 0 {
                    DEFAULT_MEMBER_CAP
                } else {
                    member_cap
                };
                if members.len() + 1 > cap {
                    return Err(GroupError::CapExceeded(cap));
                }
                GroupEvent::GroupCreated {
                    group_id,
                    name: name.trim().to_string(),
                    notice,
                    avatar,
                    owner_id,
                    member_ids: members,
                    member_cap: cap,
                    at,
                }
            }
            GroupCommand::Update {
                actor_id,
                name,
                notice,
                avatar,
                at,
            } => {
                self.existing()?;
                self.require(actor_id, GroupRole::Admin)?;
                if let Some(name) = &name {
                    check_name(name)?;
                }
                if let Some(notice) = &notice {
                    check_notice(notice)?;
                }
                if let Some(avatar) = &avatar {
                    check_avatar(avatar)?;
                }
                let name = name
                    .map(|n| n.trim().to_string())
                    .filter(|n| *n != self.name);
                let notice = notice.filter(|n| *n != self.notice);
                let avatar = avatar.filter(|a| *a != self.avatar);
                if name.is_none() && notice.is_none() && avatar.is_none() {
                    return Ok(());
                }
                GroupEvent::GroupUpdated {
                    actor_id,
                    name,
                    notice,
                    avatar,
                    at,
                }
            }
            GroupCommand::AddMembers {
                actor_id,
                user_ids,
                at,
            } => {
                self.existing()?;
                self.require(actor_id, GroupRole::Admin)?;
                check_ids("user_ids", &user_ids)?;
                let mut new: Vec<i64> = Vec::new();
                for id in user_ids {
                    if !self.members.contains_key(&id) && !new.contains(&id) {
                        new.push(id);
                    }
                }
                if new.is_empty() {
                    return Ok(());
                }
                if self.members.len() + new.len() > self.member_cap {
                    return Err(GroupError::CapExceeded(self.member_cap));
                }
                GroupEvent::MembersAdded {
                    actor_id,
                    user_ids: new,
                    at,
                }
            }
            GroupCommand::RemoveMember {
                actor_id,
                user_id,
                at,
            } => {
                self.existing()?;
                let actor = self.require(actor_id, GroupRole::Admin)?;
                let target = self.role_of(user_id).ok_or(GroupError::NotMember)?;
                if target == GroupRole::Owner {
                    return Err(GroupError::OwnerUntouchable);
                }
                if target >= actor {
                    return Err(GroupError::NotPermitted("owner"));
                }
                GroupEvent::MemberRemoved {
                    actor_id,
                    user_id,
                    at,
                }
            }
            GroupCommand::Leave { user_id, at } => {
                self.existing()?;
                match self.role_of(user_id) {
                    None => return Err(GroupError::NotMember),
                    Some(GroupRole::Owner) => return Err(GroupError::OwnerMustTransfer),
                    Some(_) => GroupEvent::MemberLeft { user_id, at },
                }
            }
            GroupCommand::ChangeRole {
                actor_id,
                user_id,
                role,
                at,
            } => {
                self.existing()?;
                self.require(actor_id, GroupRole::Owner)?;
                let current = self.role_of(user_id).ok_or(GroupError::NotMember)?;
                if current == role {
                    return Ok(());
                }
                if user_id == actor_id {
                    // The owner's own role changes only by transferring ownership to another.
                    return Err(GroupError::Refused {
                        field: "user_id",
                        reason: "the owner transfers ownership to another member",
                    });
                }
                if role == GroupRole::Owner {
                    GroupEvent::OwnershipTransferred {
                        from_user_id: actor_id,
                        to_user_id: user_id,
                        at,
                    }
                } else {
                    GroupEvent::MemberRoleChanged {
                        actor_id,
                        user_id,
                        role,
                        at,
                    }
                }
            }
            GroupCommand::MuteMember {
                actor_id,
                user_id,
                until,
                at,
            } => {
                self.existing()?;
                let actor = self.require(actor_id, GroupRole::Admin)?;
                let target = self.members.get(&user_id).ok_or(GroupError::NotMember)?;
                if target.role == GroupRole::Owner {
                    return Err(GroupError::OwnerUntouchable);
                }
                if target.role >= actor {
                    return Err(GroupError::NotPermitted("owner"));
                }
                let until = until.filter(|u| *u > at);
                let currently = target.muted_until.filter(|u| *u > at);
                if until == currently {
                    return Ok(());
                }
                GroupEvent::MemberMuted {
                    actor_id,
                    user_id,
                    until,
                    at,
                }
            }
            GroupCommand::MuteAll {
                actor_id,
                muted,
                at,
            } => {
                self.existing()?;
                self.require(actor_id, GroupRole::Admin)?;
                if self.all_muted == muted {
                    return Ok(());
                }
                GroupEvent::GroupMuted {
                    actor_id,
                    muted,
                    at,
                }
            }
            GroupCommand::Dissolve { by, at } => {
                if !self.created {
                    return Err(GroupError::NotFound);
                }
                if self.dissolved {
                    return Ok(());
                }
                if let Dissolver::Owner { user_id } = by {
                    self.require(user_id, GroupRole::Owner)?;
                }
                GroupEvent::GroupDissolved { by, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: GroupEvent) {
        let member = |role| GroupMember {
            role,
            muted_until: None,
        };
        match event {
            GroupEvent::GroupCreated {
                group_id,
                name,
                notice,
                avatar,
                owner_id,
                member_ids,
                member_cap,
                ..
            } => {
                self.group_id = group_id;
                self.name = name;
                self.notice = notice;
                self.avatar = avatar;
                self.owner_id = owner_id;
                self.member_cap = member_cap;
                self.created = true;
                self.members.insert(owner_id, member(GroupRole::Owner));
                for id in member_ids {
                    self.members.insert(id, member(GroupRole::Member));
                }
            }
            GroupEvent::GroupUpdated {
                name,
                notice,
                avatar,
                ..
            } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(notice) = notice {
                    self.notice = notice;
                }
                if let Some(avatar) = avatar {
                    self.avatar = avatar;
                }
            }
            GroupEvent::MembersAdded { user_ids, .. } => {
                for id in user_ids {
                    self.members.insert(id, member(GroupRole::Member));
                }
            }
            GroupEvent::MemberRemoved { user_id, .. } | GroupEvent::MemberLeft { user_id, .. } => {
                self.members.remove(&user_id);
            }
            GroupEvent::MemberRoleChanged { user_id, role, .. } => {
                if let Some(m) = self.members.get_mut(&user_id) {
                    m.role = role;
                }
            }
            GroupEvent::OwnershipTransferred {
                from_user_id,
                to_user_id,
                ..
            } => {
                if let Some(m) = self.members.get_mut(&from_user_id) {
                    m.role = GroupRole::Admin;
                }
                if let Some(m) = self.members.get_mut(&to_user_id) {
                    m.role = GroupRole::Owner;
                    m.muted_until = None;
                }
                self.owner_id = to_user_id;
            }
            GroupEvent::MemberMuted { user_id, until, .. } => {
                if let Some(m) = self.members.get_mut(&user_id) {
                    m.muted_until = until;
                }
            }
            GroupEvent::GroupMuted { muted, .. } => self.all_muted = muted,
            GroupEvent::GroupDissolved { .. } => self.dissolved = true,
        }
    }
}

#[cfg(test)]
mod tests;
