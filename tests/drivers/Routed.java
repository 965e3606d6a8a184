// The PostgreSQL JDBC driver through the routing proxy (a database with a replica):
// server-side prepared statements from the first use (prepareThreshold=1) that write and read,
// each read after the client's own write seeing it (read-your-writes by LSN), and a read-only
// connection (setReadOnly: BEGIN READ ONLY transactions). Exits non-zero at the first wrong
// answer. Usage: java -cp postgresql.jar Routed.java
// jdbc:postgresql://host:port/db?user=..&password=..
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class Routed {
  public static void main(String[] args) throws Exception {
    String url = args[0] + "&prepareThreshold=1";
    List<String> errors = Collections.synchronizedList(new ArrayList<>());
    List<Thread> threads = new ArrayList<>();
    for (int i = 0; i < 4; i++) {
      final int client = i;
      Thread t = new Thread(() -> {
        try (Connection c = DriverManager.getConnection(url)) {
          try (PreparedStatement ins =
                   c.prepareStatement("INSERT INTO seen (client, n) VALUES (?, ?)");
               PreparedStatement count =
                   c.prepareStatement("SELECT count(*) FROM seen WHERE client = ? AND n = ?")) {
            for (int k = 0; k < 50; k++) {
              ins.setString(1, "java" + client);
              ins.setInt(2, k);
              ins.executeUpdate();
              count.setString(1, "java" + client);
              count.setInt(2, k);
              try (ResultSet rs = count.executeQuery()) {
                rs.next();
                if (rs.getInt(1) != 1)
                  throw new IllegalStateException("own write " + k + ": " + rs.getInt(1));
              }
            }
          }
          c.setReadOnly(true);
          c.setAutoCommit(false);
          try (PreparedStatement total =
                   c.prepareStatement("SELECT count(*) FROM seen WHERE client = ?")) {
            total.setString(1, "java" + client);
            try (ResultSet rs = total.executeQuery()) {
              rs.next();
              if (rs.getInt(1) != 50)
                throw new IllegalStateException("read-only: " + rs.getInt(1));
            }
            c.commit();
          }
        } catch (Exception e) {
          errors.add("client " + client + ": " + e);
        }
      });
      threads.add(t);
      t.start();
    }
    for (Thread t : threads) t.join();
    if (!errors.isEmpty()) {
      System.err.println("FAILED\n" + String.join("\n", errors));
      System.exit(1);
    }
    System.out.println(
        "ok JDBC: 4 clients, 200 prepared writes each read back at once, read-only transactions");
  }
}
