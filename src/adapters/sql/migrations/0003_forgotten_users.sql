-- Users erased by ForgetUser in the last hour: the user id alone (no photo, face or vector). An
-- action shot that searched the user samples before the erasure and records its matches after it
-- must not bring the user back; its record transaction leaves out matches of these users. An
-- enrolment of the user removes the row (enrolling again after an erasure is allowed). Rows older
-- than an hour (far beyond any request's deadline) are removed by the next ForgetUser.
CREATE TABLE forgotten_users (
  user_id      text PRIMARY KEY,
  forgotten_at timestamptz NOT NULL
);

CREATE INDEX forgotten_users_at_idx ON forgotten_users (forgotten_at);
