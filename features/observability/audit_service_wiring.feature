Feature: Every security-relevant operation reaches the durable audit trail through the bus
  The plan lifecycle, config, session, tool, correction, entity and auth
  services emit their domain events exactly as they do today; only their import
  line changed. A bus wired to the audit service persists every emitted event,
  with the acting user taken from the `identity()` block around the request,
  the event's own time, and its details redacted before they leave the
  emitting thread. (Seeds #581 and #3970: the spec's audit table; #3936: a
  restart loses nothing; L2: the event's own timestamp.)

  Background:
    Given the services emit on a bus wired to a fresh audit trail
    And the services act for the user "alice"

  # --- the nine audit types, each with the details the spec lists ---------------

  Scenario: plan_applied keeps the plan, its projects, what changed and how long the apply took
    When the plan lifecycle service completes the apply of plan "plan-7" by "planner" for projects "billing, ledger" with these stats:
      | stat               | value                                   |
      | files_changed      | 3                                       |
      | lines_added        | 120                                     |
      | lines_removed      | 14                                      |
      | resources_modified | ["file:src/app.py", "file:src/db.py"]   |
      | validation_results | {"tests": "passed", "lint": "passed"}   |
      | apply_duration_ms  | 840                                     |
    Then the audit trail holds one "plan_applied" row, done by "alice"
    And that row's columns say:
      | column       | value   |
      | plan_id      | plan-7  |
      | actor_name   | planner |
      | project_name | billing |
      | outcome      | success |
    And that row's details are exactly:
      | detail             | value                                 |
      | project_names      | ["billing", "ledger"]                 |
      | files_changed      | 3                                     |
      | lines_added        | 120                                   |
      | lines_removed      | 14                                    |
      | resources_modified | ["file:src/app.py", "file:src/db.py"] |
      | validation_results | {"tests": "passed", "lint": "passed"} |
      | apply_duration_ms  | 840                                   |
      | actor_name         | "planner"                             |
      | project_name       | "billing"                             |

  Scenario: plan_cancelled keeps the plan, the reason and its projects
    When the plan lifecycle service calls off plan "plan-8" by "planner" for projects "billing" because "superseded by plan-7"
    Then the audit trail holds one "plan_cancelled" row, done by "alice"
    And that row's columns say:
      | column       | value   |
      | plan_id      | plan-8  |
      | actor_name   | planner |
      | project_name | billing |
    And that row's details are exactly:
      | detail        | value                  |
      | reason        | "superseded by plan-7" |
      | project_names | ["billing"]            |
      | actor_name    | "planner"              |
      | project_name  | "billing"              |

  Scenario: resource_modified keeps the resource, the kind of change, the sandbox path and the tool
    When the tool executor's "write_file" tool does a "create" of resource "file:src/new.py" at "/sandbox/plan-7/src/new.py" for plan "plan-7"
    Then the audit trail holds one "resource_modified" row, done by "alice"
    And that row's columns say:
      | column  | value  |
      | plan_id | plan-7 |
    And that row's details are exactly:
      | detail            | value                        |
      | resource_id       | "file:src/new.py"            |
      | modification_type | "create"                     |
      | sandbox_path      | "/sandbox/plan-7/src/new.py" |
      | tool_name         | "write_file"                 |

  Scenario: correction_applied keeps the attempt, the decision it corrects, the mode and the guidance
    When the correction service applies correction "corr-3" to decision "dec-12" of plan "plan-7" in "guided" mode with the guidance "keep the public API stable"
    Then the audit trail holds one "correction_applied" row, done by "alice"
    And that row's columns say:
      | column  | value   |
      | plan_id | plan-7  |
      | outcome | success |
    And that row's details are exactly:
      | detail                | value                        |
      | correction_attempt_id | "corr-3"                     |
      | original_decision_id  | "dec-12"                     |
      | mode                  | "guided"                     |
      | guidance              | "keep the public API stable" |

  Scenario: config_changed keeps the key, the old and the new value and the scope
    When the config service sets "llm.model" to "gpt-4o-mini"
    And the config service sets "llm.model" to "gpt-4o"
    Then the newest "config_changed" row was done by "alice"
    And that row's details are exactly:
      | detail    | value         |
      | key       | "llm.model"   |
      | old_value | "gpt-4o-mini" |
      | new_value | "gpt-4o"      |
      | scope     | "project"     |

  Scenario: entity_deleted keeps the kind of entity, its name and what the deletion cascaded to
    When the entity service deletes the actor "scratch-actor", which also removes "2 sessions of scratch-actor"
    Then the audit trail holds one "entity_deleted" row, done by "alice"
    And that row's details are exactly:
      | detail          | value                          |
      | entity_type     | "actor"                        |
      | entity_name     | "scratch-actor"                |
      | cascade_effects | ["2 sessions of scratch-actor"] |

  Scenario: session_created keeps the session and its actor
    When the session service opens session "sess-41" for the actor "planner"
    Then the audit trail holds one "session_created" row, done by "alice"
    And that row's columns say:
      | column     | value   |
      | session_id | sess-41 |
      | actor_name | planner |
    # The session id is in its own column; the copy in the details is masked,
    # because the default rules treat any "session id" key as a secret.
    And that row's details are exactly:
      | detail     | value            |
      | session_id | "***REDACTED***" |
      | actor_name | "planner"        |

  Scenario: auth_success keeps who logged in, from where, and the token's prefix
    When the auth service logs "alice" in from 203.0.113.7 with a token starting "ab12cd"
    Then the audit trail holds one "auth_success" row, done by "alice"
    And that row's columns say:
      | column  | value   |
      | outcome | success |
    And that row's details are exactly:
      | detail        | value         |
      | user_identity | "alice"       |
      | ip_address    | "203.0.113.7" |
      | token_prefix  | "ab12cd"      |

  Scenario: auth_failure keeps the identity that was tried, from where, and why it failed
    Given the services act for no user
    When the auth service refuses "mallory" from 198.51.100.23 because "invalid password"
    Then the audit trail holds one "auth_failure" row, done by no one
    And that row's columns say:
      | column  | value   |
      | outcome | failure |
    And that row's details are exactly:
      | detail             | value              |
      | attempted_identity | "mallory"          |
      | ip_address         | "198.51.100.23"    |
      | failure_reason     | "invalid password" |

  # --- #3970: the acting user, with no change to the four call sites -----------

  Scenario Outline: <event_type> names the user the request runs for, though its call site passes no user
    Given the services act for the user "<user>"
    When <the service does its job>
    Then the audit trail holds one "<event_type>" row, done by "<user>"
    And the event the service emitted itself named the user "<user>"

    Examples:
      | event_type      | user  | the service does its job                                                                            |
      | plan_applied    | bob   | the plan lifecycle service completes the apply of plan "plan-1" by "planner" for projects "billing" |
      | plan_cancelled  | carol | the plan lifecycle service calls off plan "plan-2" by "planner" for projects "billing" because "stale" |
      | config_changed  | dave  | the config service sets "llm.temperature" to "0.2"                                                  |
      | session_created | erin  | the session service opens session "sess-5" for the actor "planner"                                |

  Scenario: Outside any sign-in the row names no user
    Given the services act for no user
    When the session service opens session "sess-6" for the actor "planner"
    Then the audit trail holds one "session_created" row, done by no one

  Scenario: Two requests served at once each name their own user
    When the session service opens sessions for "bob" and "carol" on two threads at once, 50 each
    Then every "session_created" row names the user whose request thread created it

  # --- #3936: a restart loses nothing ----------------------------------------

  Scenario: What one process emitted, the next process reads, though the first never flushed
    Given a service process ran a working session for "alice" and reported 500 completed steps while a backup job held the database's write lock
    And none of its events was on disk yet when the process began to exit
    When the backup job lets go and the service process has exited by itself, without flushing
    And a second process reads the audit trail straight from the database file
    Then the second process finds every event the first one emitted, once each, all done by "alice"
    And the second process finds the nine audit types among them

  # --- L2: the event's own time ---------------------------------------------

  Scenario Outline: A row keeps the time the event happened, not the time it was written
    Given a "<event_type>" event of plan "plan-past" that happened at <happened>
    When the event is emitted on the wired bus
    Then the row of plan "plan-past" is stamped <stored>
    And that row was written after the event happened
    And the auditor asking for events between <from> and <to> finds that row

    Examples:
      | event_type     | happened                         | stored                           | from                      | to                        |
      | plan_applied   | 2026-03-04T05:06:07.891011+00:00 | 2026-03-04T05:06:07.891011+00:00 | 2026-03-04T00:00:00+00:00 | 2026-03-05T00:00:00+00:00 |
      | config_changed | 2025-12-31T23:59:59.500000+02:00 | 2025-12-31T21:59:59.500000+00:00 | 2025-12-31T21:00:00+00:00 | 2025-12-31T22:00:00+00:00 |

  # --- redaction -------------------------------------------------------------

  Scenario: An API key set through the config service is masked in the row and absent from the file
    When the config service sets "llm.api_key" to "sk-proj-Zx81mQ2vT7pLr4Nw9KcY3bHs6DfJ0uEaGi5oWq1X"
    And the config service sets "llm.api_key" to "sk-proj-Ab72nR3wU8qMs5Ox0LdZ4cIt7EgK1vFbHj6pXr2Y"
    Then the newest "config_changed" row was done by "alice"
    And that row's details are exactly:
      | detail    | value            |
      | key       | "llm.api_key"    |
      | old_value | "***REDACTED***" |
      | new_value | "***REDACTED***" |
      | scope     | "project"        |
    And neither API key is anywhere in the bytes of the database's files, which do hold "llm.api_key"
