// The PostgreSQL JDBC driver through the pooler (transaction mode): server-side prepared
// statements from the first use (prepareThreshold=1), batches inside transactions, a rolled
// back one. Exits non-zero at the first wrong answer.
// Usage: java -cp postgresql.jar Clients.java jdbc:postgresql://host:port/db?user=..&password=..
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class Clients {
  public static void main(String[] args) throws Exception {
    String url = args[0] + "&prepareThreshold=1";
    List<String> errors = Collections.synchronizedList(new ArrayList<>());
    List<Thread> threads = new ArrayList<>();
    for (int i = 0; i < 6; i++) {
      final int client = i;
      Thread t = new Thread(() -> {
        try (Connection c = DriverManager.getConnection(url)) {
          try (PreparedStatement add = c.prepareStatement("SELECT ?::int + ?::int")) {
            for (int k = 0; k < 100; k++) {
              add.setInt(1, client);
              add.setInt(2, k);
              try (ResultSet rs = add.executeQuery()) {
                rs.next();
                if (rs.getInt(1) != client + k) throw new IllegalStateException("add " + rs.getInt(1));
              }
            }
          }
          c.setAutoCommit(false);
          try (PreparedStatement ins = c.prepareStatement("INSERT INTO hits (client, n) VALUES (?, ?)")) {
            for (int k = 0; k < 50; k++) {
              ins.setString(1, "java" + client);
              ins.setInt(2, k);
              ins.addBatch();
            }
            ins.executeBatch();
            c.commit();
            ins.setString(1, "javarb");
            ins.setInt(2, client);
            ins.executeUpdate();
            try (PreparedStatement bad = c.prepareStatement("SELECT 1/0")) {
              bad.executeQuery();
              throw new IllegalStateException("1/0 succeeded");
            } catch (SQLException expected) {
              c.rollback();
            }
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
    System.out.println("ok JDBC: 6 clients, 600 prepared queries, 6 batches of 50 in transactions");
  }
}
