// Cancels and schema changes through the pooler with the PostgreSQL JDBC driver, beside the same
// workload connected directly (tests/drivers/cancels.py says what each part checks):
//   bystanders  statement timeouts (setQueryTimeoutMs: the driver sends a cancel request when
//               it passes) on short queries while other clients run theirs through a pool of
//               2: no other client's query may be cancelled;
//   ddl         server-side prepared statements (prepareThreshold=1) on every server
//               connection, then ADD COLUMN, DROP/CREATE of another shape and ALTER TYPE, and
//               new connections: nothing they prepare after a change may fail 0A000.
// Usage: java -cp postgresql.jar Cancels.java DIRECT_JDBC_URL POOL2_JDBC_URL POOLED_JDBC_URL
// (each url with user and password). Exits non-zero when the pooler shows an error the direct
// run does not.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.postgresql.jdbc.PgStatement;

public class Cancels {
  static final List<String> failures = Collections.synchronizedList(new ArrayList<>());

  interface Work {
    void run(int i) throws Exception;
  }

  static void threads(int n, Work work) throws InterruptedException {
    List<Thread> ts = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      final int k = i;
      Thread t = new Thread(() -> {
        try {
          work.run(k);
        } catch (Exception e) {
          failures.add("thread " + k + ": " + e);
        }
      });
      ts.add(t);
      t.start();
    }
    for (Thread t : ts) t.join();
  }

  static boolean cancelled(SQLException e) {
    return "57014".equals(e.getSQLState());
  }

  // {bystander queries cancelled, run, timeouts that cancelled their query, sent}
  static int[] bystanders(String url) throws Exception {
    AtomicInteger hit = new AtomicInteger(), ran = new AtomicInteger();
    AtomicInteger effective = new AtomicInteger(), sent = new AtomicInteger();
    final int timeouters = 2, bystanders = 6;
    threads(timeouters + bystanders, i -> {
      try (Connection c = DriverManager.getConnection(url)) {
        if (i < timeouters) {
          Random rng = new Random(i);
          for (int k = 0; k < 120; k++) {
            try (PreparedStatement s = c.prepareStatement("SELECT pg_sleep(0.02)")) {
              s.unwrap(PgStatement.class).setQueryTimeoutMs(5 + rng.nextInt(25));
              s.executeQuery().close();
            } catch (SQLException e) {
              if (!cancelled(e)) throw e;
              effective.incrementAndGet();
            }
            sent.incrementAndGet();
            try (Statement s = c.createStatement()) {
              s.executeQuery("SELECT 1").close();
            } catch (SQLException e) {
              if (!cancelled(e)) throw e;  // its own late cancel, as directly
            }
          }
        } else {
          try (PreparedStatement s = c.prepareStatement("SELECT pg_sleep(0.002)")) {
            for (int k = 0; k < 400; k++) {
              try {
                s.executeQuery().close();
              } catch (SQLException e) {
                if (!cancelled(e)) throw e;
                hit.incrementAndGet();
              }
              ran.incrementAndGet();
            }
          }
        }
      }
    });
    return new int[] {hit.get(), ran.get(), effective.get(), sent.get()};
  }

  static final String[][] SHAPES = {
    {"ADD COLUMN", "ALTER TABLE jshape ADD COLUMN b text DEFAULT 'x'"},
    {"DROP/CREATE", "DROP TABLE jshape", "CREATE TABLE jshape (id int PRIMARY KEY, c text, d int)",
     "INSERT INTO jshape SELECT g, 'c' || g, g FROM generate_series(1, 50) g"},
    {"ALTER TYPE", "ALTER TABLE jshape ALTER COLUMN d TYPE bigint"},
  };

  // Per change: {errors of connections opened after it, of those opened before, statements,
  // rows read with a wrong value}
  static int[][] ddl(String direct, String url) throws Exception {
    final int clients = 8, runs = 60;
    try (Connection admin = DriverManager.getConnection(direct); Statement s = admin.createStatement()) {
      s.execute("DROP TABLE IF EXISTS jshape");
      s.execute("CREATE TABLE jshape (id int PRIMARY KEY, a int)");
      s.execute("INSERT INTO jshape SELECT g, g FROM generate_series(1, 50) g");
    }
    Connection[][] generations = new Connection[SHAPES.length + 1][clients];
    int[][] result = new int[SHAPES.length][];
    for (int g = 0; g <= SHAPES.length; g++) {
      for (int i = 0; i < clients; i++) generations[g][i] = DriverManager.getConnection(url);
      if (g > 0) {
        try (Connection admin = DriverManager.getConnection(direct); Statement s = admin.createStatement()) {
          for (int k = 1; k < SHAPES[g - 1].length; k++) s.execute(SHAPES[g - 1][k]);
        }
      }
      // (Connected before the change, prepared after it: as directly, what they parse after
      // the change is planned after it.)
      AtomicInteger newErrs = new AtomicInteger(), oldErrs = new AtomicInteger();
      AtomicInteger wrong = new AtomicInteger();
      final int gen = g;
      // (Each row's value column holds its id: a (int) before DROP/CREATE, then d (int, then
      // bigint). A driver reading binary results by a shape it no longer gets misreads it.)
      final String valueColumn = g <= 1 ? "a" : "d";
      threads(g == 0 ? clients : 2 * clients, i -> {
        boolean isNew = i < clients;
        Connection c = isNew ? generations[gen][i] : generations[gen - 1][i - clients];
        try (PreparedStatement p = c.prepareStatement("SELECT * FROM jshape WHERE id = ?")) {
          for (int k = 0; k < runs; k++) {
            final int id = k % 50 + 1;
            p.setInt(1, id);
            try (ResultSet rs = p.executeQuery()) {
              if (!rs.next() || rs.getLong(valueColumn) != id) wrong.incrementAndGet();
            } catch (SQLException e) {
              // What parsed before the change may fail as directly (0A000), or, through the
              // pooler, bind the copy prepared after it with the old column count (08P01):
              // counted, not asserted. What parsed after it must not fail.
              if (isNew && !"0A000".equals(e.getSQLState())) throw e;
              (isNew ? newErrs : oldErrs).incrementAndGet();
            }
          }
        }
      });
      if (g > 0) {
        for (Connection c : generations[g - 1]) c.close();
        result[g - 1] = new int[] {newErrs.get(), oldErrs.get(), clients * runs, wrong.get()};
      }
    }
    for (Connection c : generations[SHAPES.length]) c.close();
    return result;
  }

  public static void main(String[] args) throws Exception {
    String direct = args[0] + "&prepareThreshold=1";
    String[][] targets = {{"direct", direct, direct}, {"pooler", args[1] + "&prepareThreshold=1",
                                                       args[2] + "&prepareThreshold=1"}};
    for (String[] t : targets) {
      int[] b = bystanders(t[1]);
      System.out.printf("%-6s JDBC: %d of %d bystander queries cancelled; %d of %d query timeouts "
          + "cancelled their own query%n", t[0], b[0], b[1], b[2], b[3]);
      if (b[0] != 0) failures.add(t[0] + ": " + b[0] + " bystander queries cancelled");
      if (b[2] == 0) failures.add(t[0] + ": no timeout took effect (the race was not run)");
      int[][] d = ddl(direct, t[2]);
      for (int k = 0; k < SHAPES.length; k++) {
        System.out.printf("%-6s JDBC %s: %d of %d statements prepared after it failed 0A000 "
            + "(%d of %d of connections prepared before it failed); %d rows read wrong%n", t[0],
            SHAPES[k][0], d[k][0], d[k][2], d[k][1], d[k][2], d[k][3]);
        if (d[k][0] != 0) failures.add(t[0] + " " + SHAPES[k][0] + ": " + d[k][0] + " failed");
        if (d[k][3] != 0) failures.add(t[0] + " " + SHAPES[k][0] + ": " + d[k][3] + " rows read wrong");
      }
    }
    if (!failures.isEmpty()) {
      System.err.println("FAILED\n" + String.join("\n", failures));
      System.exit(1);
    }
    System.out.println("ok JDBC cancels: no bystander cancelled, no statement prepared after a "
        + "schema change failed");
  }
}
