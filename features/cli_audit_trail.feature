Feature: An auditor asks the audit trail questions from the command line
  Compliance auditors answer "who did what, and when?" with the auditbus
  command, without writing Python, and must be able to trust that the answer
  is complete, untampered and free of secrets.

  Background:
    Given an audit trail with these events:
      | user  | event           | plan | session | when          |
      | alice | session_created |      | s-1     | 10 days ago   |
      | alice | plan_applied    | p-1  |         | 3 hours ago   |
      | bob   | plan_cancelled  | p-2  |         | 5 minutes ago |
      | bob   | auth_failure    |      |         | 1 minute ago  |

  Scenario: What did bob do today?
    When the auditor runs "auditbus query --user bob --since 1d"
    Then the command succeeds
    And the answer lists, newest first: auth_failure, plan_cancelled

  Scenario: Everything that happened to one plan, for a script
    When the auditor runs "auditbus query --plan p-1 --json"
    Then the command succeeds
    And every line of the answer is a JSON object with plan_id "p-1" and user_identity "alice"

  Scenario: Which plans were applied or cancelled this week, oldest first?
    When the auditor runs "auditbus query --type plan_applied --type plan_cancelled --since 7d --asc"
    Then the answer lists, newest first: plan_applied, plan_cancelled

  Scenario: Has anyone edited the trail behind our back?
    Given someone changed the details of plan "p-1"'s row directly in the database file
    When the auditor runs "auditbus verify"
    Then the command fails with status 3
    And the answer names plan "p-1"'s row as the first bad row

  Scenario: An untouched trail verifies
    When the auditor runs "auditbus verify"
    Then the command succeeds
    And the answer says "chain intact"

  Scenario: Hand the whole trail to an external reviewer
    When the auditor runs "auditbus export --format csv --output trail.csv"
    Then the command succeeds
    And "trail.csv" holds these events, oldest first: session_created, plan_applied, plan_cancelled, auth_failure

  Scenario: A mistyped database path is reported, never created
    When the auditor runs "auditbus query --db typo.db"
    Then the command fails with status 1 and the one-line error "no audit database at typo.db"
    And there is no file "typo.db"

  Scenario: A date the command does not understand
    When the auditor runs "auditbus query --since last-tuesday"
    Then the command fails with status 2 and the one-line error "bad date 'last-tuesday'"

  Scenario: Old rows are removed only with explicit confirmation
    Given the trail was migrated from the legacy service, which left 2 rows from 400 days ago
    When the auditor runs "auditbus purge --before 1y" from a script
    Then the command fails with status 2 and the one-line error "bad date '1y'"
    When the auditor runs "auditbus purge --before 365d" from a script
    Then the command fails with status 1 and the one-line error "pass --yes to confirm"
    And the trail still holds 6 events
    When the auditor runs "auditbus purge --before 365d --yes"
    Then the command succeeds
    And the answer says "purged 2 rows recorded before"
    And the trail still holds 4 events
    When the auditor runs "auditbus verify"
    Then the command succeeds

  Scenario: The demo runs the services, shows the trail and proves it
    Given an empty working directory
    When the auditor runs "auditbus demo"
    Then the command succeeds
    And the answer says "all checks passed"
    And the trail in "audit.db" holds every one of the nine audit types, each by user "alice"
    And no API key of the form sk-proj-... is stored in "audit.db"
