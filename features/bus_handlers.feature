Feature: Handlers on the event bus are isolated and run in order
  As a service developer who emits domain events
  I want every subscribed handler to run, in the order it subscribed,
  so that one broken subscriber never breaks a plan operation or starves the others.

  Background:
    Given an event bus

  Scenario: A failing audit handler does not stop the notifier
    Given the "audit recorder" handler subscribes to "plan_applied" and fails
    And the "notifier" handler subscribes to "plan_applied"
    When the plan lifecycle service applies plan "plan-7"
    Then applying the plan succeeds
    And "notifier" handled plan "plan-7"
    And the failure of "audit recorder" is logged for "plan_applied" with its traceback
    And the bus counts 1 handler error

  Scenario: Handlers run in the order they subscribed
    Given the "audit recorder" handler subscribes to "plan_cancelled"
    And the "notifier" handler subscribes to "plan_cancelled"
    And the "metrics" handler subscribes to every event
    And the "cleanup" handler subscribes to "plan_cancelled"
    When the plan lifecycle service cancels plan "plan-3"
    Then the handlers ran in this order: audit recorder, notifier, metrics, cleanup

  Scenario: A handler only hears about the events it subscribed to
    Given the "notifier" handler subscribes to "session_created"
    When the plan lifecycle service applies plan "plan-1"
    And the session service creates session "sess-9"
    Then "notifier" handled exactly 1 event

  Scenario: A follow-up event raised by a handler is handled before the outer event continues
    Given the "planner" handler subscribes to "plan_applied" and starts step "step-1"
    And the "step tracker" handler subscribes to "step_started"
    And the "notifier" handler subscribes to "plan_applied"
    When the plan lifecycle service applies plan "plan-5"
    Then the handlers ran in this order: planner, step tracker, notifier

  Scenario: Live observers see the event before any handler
    Given a dashboard watches the live event stream
    And the "notifier" handler subscribes to "plan_applied"
    When the plan lifecycle service applies plan "plan-2"
    Then the dashboard saw plan "plan-2" before "notifier" ran
    And the event is in the recent-events log when "notifier" runs

  Scenario: A subscriber that leaves mid-operation is not called again
    Given the "notifier" handler subscribes to "plan_applied" and unsubscribes "auditor"
    And the "auditor" handler subscribes to "plan_applied"
    When the plan lifecycle service applies plan "plan-4"
    Then the handlers ran in this order: notifier

  Scenario: A disposed bus refuses new events
    Given the "notifier" handler subscribes to "plan_applied"
    When the application shuts the event bus down
    Then applying plan "plan-8" fails because the bus is closed
    And "notifier" handled exactly 0 events
