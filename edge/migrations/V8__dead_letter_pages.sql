-- `GET /v1/dead-letters` reads a page at a time, newest refusal first, resuming after the last
-- row's (rejected_at, seq, op_id): an index in that order answers each page without sorting the
-- whole table.
CREATE INDEX dead_letters_rejected ON dead_letters(rejected_at, seq, op_id);
