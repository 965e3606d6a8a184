// The PostgreSQL JDBC driver through a pooler following a cluster while the cluster's primary
// fails over: 3 threads, each with a connection of its own, commit transactions of a
// server-side prepared INSERT (prepareThreshold=1) until the file STOP exists. A transaction
// that fails is counted, the connection (closed by the driver or not) is opened anew, as a
// connection pool would, and the thread goes on. Prints the ids whose commit succeeded, one a
// line, then "errors N after M" (M: commits after the first error).
// Usage: java -cp postgresql.jar Failover.java jdbc:postgresql://host:port/db?user=.. STOP PREFIX
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

public class Failover {
  public static void main(String[] args) throws Exception {
    String url = args[0] + "&prepareThreshold=1&connectTimeout=5";
    Path stop = Path.of(args[1]);
    String prefix = args[2];
    List<String> acked = Collections.synchronizedList(new ArrayList<>());
    AtomicInteger errors = new AtomicInteger();
    AtomicInteger after = new AtomicInteger();
    List<Thread> threads = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      final int client = i;
      Thread t = new Thread(() -> {
        Connection c = null;
        for (int k = 0; !Files.exists(stop); k++) {
          String id = prefix + client + "-" + k;
          try {
            if (c == null) {
              c = DriverManager.getConnection(url);
              c.setAutoCommit(false);
            }
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO failover_ids (id) VALUES (?)")) {
              ins.setString(1, id);
              ins.executeUpdate();
            }
            c.commit();
            acked.add(id);
            if (errors.get() > 0) after.incrementAndGet();
            Thread.sleep(5);
          } catch (SQLException e) {
            errors.incrementAndGet();
            try { if (c != null) c.close(); } catch (SQLException ignored) { }
            c = null;
            try { Thread.sleep(20); } catch (InterruptedException ignored) { }
          } catch (InterruptedException e) {
            return;
          }
        }
        try { if (c != null) c.close(); } catch (SQLException ignored) { }
      });
      threads.add(t);
      t.start();
    }
    for (Thread t : threads) t.join();
    for (String id : acked) System.out.println(id);
    System.out.println("errors " + errors.get() + " after " + after.get());
  }
}
