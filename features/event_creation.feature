Feature: Services record what happened as domain events
  The plan lifecycle, config and session services describe each thing that
  happens as a DomainEvent. The event says who did it, when, and to what, so
  that the audit trail can answer "who did what, when" without the services
  threading the acting user through every call.

  Scenario: An operator applies a plan under their identity
    Given the operator "alice" is acting
    When the plan "plan-42" of project "alpha" is applied by the planner "planner-bot"
    Then the event is a "plan_applied" event
    And the event names the plan "plan-42", the project "alpha" and the actor "planner-bot"
    And the event was done by "alice"
    And the event happened just now, in UTC
    And the event has its own event id

  Scenario: A service passes the user explicitly
    Given the operator "alice" is acting
    When a session "sess-9" is created for "planner-bot" by the user "bob"
    Then the event was done by "bob"

  Scenario: No one is acting outside an identity block
    When a session "sess-1" is created for "planner-bot"
    Then the event is a "session_created" event
    And the event was done by no one

  Scenario: A configuration change keeps its old and new values
    Given the operator "carol" is acting
    When the config key "llm.model" changes from "small" to "large" in scope "project"
    Then the event is a "config_changed" event
    And the event details say key "llm.model", old value "small", new value "large"
    And the event was done by "carol"

  Scenario: The event is a snapshot of what the service passed
    When a session "sess-2" is created for "planner-bot"
    And the service changes its own details dict afterwards
    Then the event details still say session "sess-2"
    And changing the event is refused

  Scenario: An event read back from its JSON is the same event
    Given the operator "alice" is acting
    When the plan "plan-7" of project "beta" is applied by the planner "planner-bot"
    Then the event read back from its JSON is the same event

  Scenario Outline: Bad input is rejected with a message that says what is wrong
    When a service builds an event with <field> set to <value>
    Then it is rejected with a ValueError or TypeError
    And the message names "<named>" and says "<accepted>"

    Examples:
      | field      | value          | named      | accepted              |
      | event_type | "plan_applyed" | event_type | plan_applied          |
      | plan_id    | 42             | plan_id    | str or None           |
      | details    | ["a", "b"]     | details    | expected a dict       |
      | timestamp  | "next tuesday" | timestamp  | ISO-8601              |
      | planid     | "plan-1"       | planid     | unexpected keyword    |
