//! Reports: anyone files one (once while it is open), moderators alone list and resolve
//! them, and removing a reported post goes through the usual deletion.

use std::time::Duration;

use social_proto::{
    post::v1::GetPostRequest,
    user::v1::{
        ListReportsRequest, ReportAccountRequest, ReportAction, ReportCategory,
        ReportCommentRequest, ReportPostRequest, ResolveReportRequest,
    },
};
use social_testkit::{Answer, PASSWORD, Refused, Stack, authed, eventually, violated_fields};
use tonic::Code;

/// Makes `who` (an id or a username) a `role`, as the operator command does.
async fn set_role(stack: &Stack, who: &str, role: &str) {
    let config = social_user::Config::for_tests(
        &social_testkit::mongodb_uri(),
        &stack.database,
        stack.events.clone(),
    );
    social_user::set_role(&config, who, role).await.unwrap();
}

fn list() -> ListReportsRequest {
    ListReportsRequest { page_size: 10, page_token: String::new() }
}

#[tokio::test]
async fn a_moderator_resolves_a_report_by_removing_the_post_and_no_one_else_may() {
    let stack = Stack::start().await;
    let mut users = stack.users().await;
    let [(_, alice_token), (bob, bob_token), (_, carol_token), (_, mod_token)] =
        stack.register_all(["alice", "bob", "carol", "moder"]).await;
    let post = stack.post(&bob_token, "something vile").await;
    stack.like_post(&carol_token, &post.id).await.unwrap();

    // Alice and carol report bob's post; alice again: her open report comes back.
    let report_post = |comment: &str| ReportPostRequest {
        post_id: post.id.clone(),
        category: ReportCategory::Hate as i32,
        comment: comment.into(),
    };
    let first = users.report_post(authed(report_post("awful"), &alice_token)).await.answer();
    assert_eq!((first.status.as_str(), first.target_user_id.as_str()), ("open", bob.as_str()));
    let again = users.report_post(authed(report_post("still awful"), &alice_token)).await.answer();
    assert_eq!(again.id, first.id);
    let carols = users.report_post(authed(report_post(""), &carol_token)).await.answer();
    let account = ReportAccountRequest {
        user_id: bob.clone(),
        category: ReportCategory::Spam as i32,
        comment: String::new(),
    };
    let about_bob = users.report_account(authed(account, &alice_token)).await.answer();

    // An ordinary account may not read or resolve reports.
    users.list_reports(authed(list(), &alice_token)).await.refused(Code::PermissionDenied);
    let resolve = |id: &str, action: ReportAction| ResolveReportRequest {
        id: id.into(),
        action: action as i32,
    };
    users
        .resolve_report(authed(resolve(&first.id, ReportAction::RemoveContent), &bob_token))
        .await
        .refused(Code::PermissionDenied);

    // A moderator reads the queue, oldest first, each report with its target.
    set_role(&stack, "moder", "moderator").await;
    let queue = users.list_reports(authed(list(), &mod_token)).await.answer().reports;
    let ids: Vec<&str> = queue.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str(), carols.id.as_str(), about_bob.id.as_str()]);
    assert_eq!(queue[0].target_post.as_ref().unwrap().content, "something vile");
    assert_eq!(queue[2].target_account.as_ref().unwrap().username, "bob");
    assert!(queue[2].target_account.as_ref().unwrap().email.is_empty());

    // Removing the post deletes it as its author would, and closes both its reports.
    let done = users
        .resolve_report(authed(resolve(&first.id, ReportAction::RemoveContent), &mod_token))
        .await
        .answer();
    assert_eq!((done.status.as_str(), done.resolution.as_str()), ("resolved", "removed"));
    let mut posts = stack.posts().await;
    posts.get_post(GetPostRequest { id: post.id.clone() }).await.refused(Code::NotFound);
    let queue = users.list_reports(authed(list(), &mod_token)).await.answer().reports;
    assert_eq!(queue.len(), 1, "{queue:?}");
    // The account report is dismissed; an account is not removed by a report.
    let err = users
        .resolve_report(authed(resolve(&about_bob.id, ReportAction::RemoveContent), &mod_token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["action"]);
    users
        .resolve_report(authed(resolve(&about_bob.id, ReportAction::Dismiss), &mod_token))
        .await
        .unwrap();
    assert!(users.list_reports(authed(list(), &mod_token)).await.answer().reports.is_empty());

    // The post's like went with it, through the usual events: carol's like is gone.
    let gone = eventually(Duration::from_secs(15), || async {
        let n = stack.count("likes", bson::doc! { "state": "active" }).await;
        (n == 0).then_some(())
    })
    .await;
    assert!(gone.is_some());

    // Once resolved, a report of the same post is a new one (here: of nothing left).
    users.report_post(authed(report_post("again"), &alice_token)).await.refused(Code::NotFound);
}

#[tokio::test]
async fn reports_are_validated() {
    let stack = Stack::start().await;
    let mut users = stack.users().await;
    let [(alice, alice_token), (_, bob_token)] = stack.register_all(["alice", "bob"]).await;
    let post = stack.post(&alice_token, "mine").await;
    let comment = stack.comment(&bob_token, &post.id, "bob's").await.unwrap();
    let own = ReportPostRequest {
        post_id: post.id.clone(),
        category: ReportCategory::Spam as i32,
        comment: String::new(),
    };
    let err = users.report_post(authed(own, &alice_token)).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["post_id"]);
    let bad =
        ReportAccountRequest { user_id: "nope".into(), category: 0, comment: "x".repeat(1001) };
    let err = users.report_account(authed(bad, &bob_token)).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["user_id", "category", "comment"]);
    let unknown = ReportAccountRequest {
        user_id: bson::oid::ObjectId::new().to_hex(),
        category: ReportCategory::Other as i32,
        comment: String::new(),
    };
    users.report_account(authed(unknown, &bob_token)).await.refused(Code::NotFound);
    let of_comment = ReportCommentRequest {
        comment_id: comment.id,
        category: ReportCategory::Harassment as i32,
        comment: String::new(),
    };
    let report = users.report_comment(authed(of_comment, &alice_token)).await.answer();
    assert_eq!(report.target_type, "comment");
    users
        .report_account(ReportAccountRequest {
            user_id: alice,
            category: 1,
            comment: String::new(),
        })
        .await
        .refused(Code::Unauthenticated);
}

#[tokio::test]
async fn what_a_deleted_account_wrote_in_its_reports_goes_with_it() {
    let stack = Stack::start().await;
    let mut users = stack.users().await;
    let [(_, alice_token), (bob, _), (_, mod_token)] =
        stack.register_all(["alice", "bob", "moder"]).await;
    let account = ReportAccountRequest {
        user_id: bob,
        category: ReportCategory::Harassment as i32,
        comment: "my neighbour's name and address".into(),
    };
    users.report_account(authed(account, &alice_token)).await.unwrap();
    stack.delete_account(&alice_token, PASSWORD).await.unwrap();
    set_role(&stack, "moder", "moderator").await;
    let forgotten = eventually(Duration::from_secs(15), || {
        let mut users = users.clone();
        let token = mod_token.clone();
        async move {
            let queue = users.list_reports(authed(list(), &token)).await.ok()?;
            let reports = queue.into_inner().reports;
            (reports.len() == 1 && reports[0].comment.is_empty()).then_some(())
        }
    })
    .await;
    assert!(forgotten.is_some(), "the report's comment stays");
}
